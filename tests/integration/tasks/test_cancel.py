"""Cancelling a running task reaches its worker even when the core cancel signal is lost."""

from __future__ import annotations

import asyncio
import uuid

import pytest

import jsflow
from jsflow.tasks.app import App
from jsflow.tasks.status import TaskStatus
from jsflow.tasks.streams import cancel_subject, state_bucket
from jsflow.tasks.worker import Worker

pytestmark = pytest.mark.asyncio(loop_scope="session")


def uniq(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


async def _deafen(worker: Worker) -> None:
    """Simulate lost cancel signals: drop the worker's core subscription to them."""
    wildcard = cancel_subject(worker.app.scope)
    for sub in list(worker._subs):
        if getattr(sub, "subject", "") == wildcard:
            await sub.unsubscribe()
            worker._subs.remove(sub)
            return
    raise AssertionError("the worker has no cancel subscription")


def _long_task(app: App) -> tuple[object, asyncio.Event, asyncio.Event]:
    started, interrupted = asyncio.Event(), asyncio.Event()

    @app.task(name=uniq("long"), retries=0)
    async def long() -> None:
        started.set()
        try:
            await asyncio.sleep(120)
        except asyncio.CancelledError:
            interrupted.set()
            raise

    return long, started, interrupted


async def test_running_task_is_cancelled_when_its_cancel_signal_is_lost(
    jsflow_client: jsflow.Client,
) -> None:
    # given a long task running on a worker that no longer hears core cancel signals
    app = App(jsflow_client, "t")
    long, started, interrupted = _long_task(app)
    async with app.worker() as worker:
        await _deafen(worker)
        handle = await long.submit()  # type: ignore[attr-defined]
        await asyncio.wait_for(started.wait(), 10)
        # when it is cancelled
        assert await handle.cancel() is True
        # then the worker learns it from the task's state and interrupts the coroutine
        await asyncio.wait_for(interrupted.wait(), 10)
        with pytest.raises(jsflow.TaskCancelledError):
            await handle.result(timeout=10)
    assert await handle.status() is TaskStatus.CANCELLED


async def test_cancel_called_again_resends_the_signal(jsflow_client: jsflow.Client) -> None:
    # given a running task that shrugs off cancellation until released
    app = App(jsflow_client, "t")
    started, release = asyncio.Event(), asyncio.Event()

    @app.task(name=uniq("stubborn"), retries=0)
    async def stubborn() -> None:
        started.set()
        while not release.is_set():
            try:
                await release.wait()
            except asyncio.CancelledError:
                continue

    async with app.worker():
        handle = await stubborn.submit()
        await asyncio.wait_for(started.wait(), 10)
        signal = cancel_subject(app.scope, handle.id)
        sub = await jsflow_client.nc.subscribe(signal)
        # when cancel() is called twice while it still runs
        first = await handle.cancel()
        again = await handle.cancel()
        signals = [(await sub.next_msg(timeout=5)).subject for _ in range(2)]
        await sub.unsubscribe()
        release.set()
        await handle.wait(timeout=10)
    # then both calls report the cancel in progress, and each sent the signal
    assert (first, again) == (True, True)
    assert signals == [signal] * 2
    assert (await handle.status()).terminal


async def test_running_tasks_share_one_watch_and_release_their_listeners(
    jsflow_client: jsflow.Client,
) -> None:
    # given a worker that runs many tasks at once
    app = App(jsflow_client, "t")
    gate = asyncio.Event()
    running = 0

    @app.task(name=uniq("many"))
    async def many(i: int) -> int:
        nonlocal running
        running += 1
        await gate.wait()
        return i

    backend = await app.backend()
    kv_stream = f"KV_{state_bucket(app.scope)}"
    before = (await jsflow_client.js.stream_info(kv_stream)).state.consumer_count
    async with app.worker(concurrency=20):
        handles = [await many.submit(i) for i in range(20)]
        ids = {h.id for h in handles}
        # when all of them run long enough to watch their state for a cancel flag
        for _ in range(400):
            if running == 20 and ids <= backend.store.store.listened_keys():
                break
            await asyncio.sleep(0.025)
        else:
            raise AssertionError("the running tasks did not all register a listener")
        # then the state bucket has at most one more consumer than before
        during = (await jsflow_client.js.stream_info(kv_stream)).state.consumer_count
        assert during <= before + 1
        gate.set()
        assert [await h.result(timeout=10) for h in handles] == list(range(20))
    # and after they finished no listener on their ids is left behind
    assert not backend.store.store.listened_keys() & ids
