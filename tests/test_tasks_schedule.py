"""Schedules on the server's message scheduler: @at and recurring, fired once per tick."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter

import pytest

import jsflow
from jsflow.tasks.app import App
from jsflow.tasks.context import current_task
from jsflow.tasks.status import TaskStatus

pytestmark = pytest.mark.asyncio(loop_scope="session")


def uniq(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


async def test_schedule_at_fires_once_with_two_workers(jsflow_client: jsflow.Client) -> None:
    # given two workers (two connections) for one task name
    name = uniq("at")
    runs: Counter[str] = Counter()
    other = await jsflow.connect(jsflow_client.nc.connected_url.geturl())  # type: ignore[union-attr]
    apps = [App(jsflow_client, "a"), App(other, "b")]
    fns = []
    for app in apps:

        @app.task(name=name)
        async def tick(x: int) -> int:
            runs[current_task().id] += 1
            return x

        fns.append(tick)
    async with other, apps[0].worker(), apps[1].worker():
        # when a call is scheduled one second ahead
        handle = await fns[0].submit_in(1.0, 5)
        assert await handle.status() is TaskStatus.PENDING
        # then it runs once, when due
        assert await handle.result(timeout=15) == 5
        await asyncio.sleep(0.5)
    assert runs == {handle.id: 1}
    assert (await handle.info()).attempt == 1


async def test_recurring_schedule_fires_each_tick_once(jsflow_client: jsflow.Client) -> None:
    # given a task on an @every 1s schedule and two workers
    name = uniq("every")
    runs: Counter[str] = Counter()
    app = App(jsflow_client, "t")

    @app.task(name=name)
    async def beat() -> None:
        runs[current_task().id] += 1

    schedule = await beat.schedule(uniq("s"), "@every 1s")
    async with app.worker(), app.worker():
        for _ in range(100):
            if len(runs) >= 2:
                break
            await asyncio.sleep(0.1)
        # when it is cancelled
        await schedule.cancel()
        await asyncio.sleep(1.5)
        seen = len(runs)
        await asyncio.sleep(1.5)
    # then each tick ran exactly once, and ticks stop after cancel
    assert len(runs) >= 2 and set(runs.values()) == {1}
    assert len(runs) == seen
