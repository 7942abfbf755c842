"""Waiting for a condition without a fixed sleep, and the jsflow tasks left running."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import jsflow

JSFLOW_DIR = str(Path(jsflow.__file__).parent)


async def eventually(
    check: Callable[[], bool | Awaitable[bool]],
    what: str = "the condition",
    *,
    timeout: float = 15.0,
    interval: float = 0.05,
) -> None:
    """Poll ``check`` (sync or async) until it is true; fail naming ``what`` after a generous
    ``timeout`` (a hang guard, not a timing)."""
    deadline = asyncio.timeout(timeout)
    try:
        async with deadline:
            while True:
                done = check()
                if inspect.isawaitable(done):
                    done = await done
                if done:
                    return
                await asyncio.sleep(interval)
    except TimeoutError:
        if deadline.expired():
            raise AssertionError(f"{what} did not happen within {timeout}s") from None
        raise


def running_jsflow_tasks() -> set[asyncio.Task[Any]]:
    """Unfinished asyncio tasks running jsflow's own code (other than the caller's)."""
    found = set()
    for task in asyncio.all_tasks():
        if task is asyncio.current_task() or task.done():
            continue
        code = getattr(task.get_coro(), "cr_code", None)
        if code is not None and code.co_filename.startswith(JSFLOW_DIR):
            found.add(task)
    return found
