"""Tiny task definitions several task tests share."""

from __future__ import annotations

import asyncio
from typing import Any

from jsflow.tasks.app import App


def long_task(
    app: App, name: str, *, seconds: float = 120, **options: Any
) -> tuple[Any, asyncio.Event, asyncio.Event]:
    """Task ``name`` of ``app`` that sleeps ``seconds``: returns it with an event set when
    it starts and one set when its coroutine is cancelled (``options`` go to ``@app.task``)."""
    started, interrupted = asyncio.Event(), asyncio.Event()

    @app.task(name=name, **options)
    async def long() -> None:
        started.set()
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            interrupted.set()
            raise

    return long, started, interrupted


def recorder(app: App, name: str, runs: list[str]) -> Any:
    """Task ``name`` of ``app`` taking one tag, which each run appends to ``runs``."""

    @app.task(name=name)
    async def beat(tag: str) -> None:
        runs.append(tag)

    return beat
