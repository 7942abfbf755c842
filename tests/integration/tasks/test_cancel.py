"""Cancelling a task: a pending one never starts, a running one is interrupted by its
signal (whatever its id holds) or, when the signal is lost, through its state; a cancel is
never retried, and running tasks watch their state through one shared watch."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

import jsflow
from jsflow.tasks.app import App
from jsflow.tasks.status import TaskStatus
from jsflow.tasks.streams import cancel_subject, state_bucket
from jsflow.tasks.worker import Worker
from tests.support.names import uniq
from tests.support.tasks import long_task

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def _deafen(worker: Worker) -> None:
    """Simulate lost cancel signals: drop the worker's core subscription to them."""
    wildcard = cancel_subject(worker.app.scope)
    for sub in list(worker._subs):
        if getattr(sub, "subject", "") == wildcard:
            await sub.unsubscribe()
            worker._subs.remove(sub)
            return
    raise AssertionError("the worker has no cancel subscription")


async def test_cancel_pending_task_never_starts(jsflow_client: jsflow.Client) -> None:
    # given a task submitted while no worker runs
    app = App(jsflow_client, "t")
    ran: list[int] = []

    @app.task(name=uniq("never"))
    async def never() -> None:
        ran.append(1)

    handle = await never.submit()
    # when it is cancelled, then a worker started later never runs it
    assert await handle.cancel() is True
    async with app.worker():
        with pytest.raises(jsflow.TaskCancelledError):
            await handle.result(timeout=10)
        marker = await never.submit()  # a later task proves the request was consumed
        await marker.result(timeout=10)
    assert ran == [1]
    assert await handle.status() is TaskStatus.CANCELLED
    assert await handle.cancel() is False  # already finished


async def test_cancel_running_task_interrupts_its_coroutine(jsflow_client: jsflow.Client) -> None:
    # given a long task running on a worker
    app = App(jsflow_client, "t")
    long, started, interrupted = long_task(app, uniq("long"), seconds=60)

    async with app.worker():
        handle = await long.submit()
        await asyncio.wait_for(started.wait(), 10)
        # when it is cancelled
        assert await handle.cancel() is True
        # then its coroutine is cancelled within a second and result() says so
        await asyncio.wait_for(interrupted.wait(), 1.0)
        with pytest.raises(jsflow.TaskCancelledError):
            await handle.result(timeout=10)
    assert await handle.status() is TaskStatus.CANCELLED
    assert [e.kind async for e in handle.events(idle_timeout=5)][-1] == "cancelled"


async def test_cancelling_a_running_task_with_a_dotted_id_interrupts_it_by_its_signal(
    jsflow_client: jsflow.Client,
) -> None:
    # given a task of a named app that sleeps 30 s, running under an id holding dots
    app = App(jsflow_client, uniq("orders"))
    sleepy, started, interrupted = long_task(app, uniq("sleepy"), seconds=30, retries=0)

    task_id = f"order.{uuid.uuid4().hex[:8]}.v1"
    signals = await jsflow_client.nc.subscribe(cancel_subject(app.scope, task_id))
    try:
        async with asyncio.timeout(15), app.worker():
            handle = await sleepy.submit_with(task_id=task_id)
            await started.wait()
            # when it is cancelled at once (before the state watch of long attempts starts)
            begin = time.monotonic()
            assert await handle.cancel() is True
            await interrupted.wait()
            took = time.monotonic() - begin
            # then the signal on the app's cancel subject, dotted id and all, interrupted it
            # well before the fallback watch (after 1 s of running) could
            assert (await signals.next_msg(timeout=5)).subject == cancel_subject(app.scope, task_id)
            assert took < 0.9, f"interrupted only after {took:.2f}s"
            with pytest.raises(jsflow.TaskCancelledError):
                await handle.result(timeout=10)
    finally:
        await signals.unsubscribe()
    assert await handle.status() is jsflow.TaskStatus.CANCELLED


async def test_running_task_is_cancelled_when_its_cancel_signal_is_lost(
    jsflow_client: jsflow.Client,
) -> None:
    # given a long task running on a worker that no longer hears core cancel signals
    app = App(jsflow_client, "t")
    long, started, interrupted = long_task(app, uniq("long"), retries=0)
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


async def test_cancel_of_a_task_that_fails_on_cancellation_is_not_retried(
    jsflow_client: jsflow.Client,
) -> None:
    # given a running task that turns its cancellation into an error, with long backoff
    app = App(jsflow_client, "t")
    started = asyncio.Event()
    calls: list[int] = []

    @app.task(name=uniq("stubborn"), retries=3, backoff=300.0, max_backoff=300.0)
    async def stubborn() -> None:
        calls.append(1)
        started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            raise RuntimeError("interrupted") from None

    async with app.worker():
        handle = await stubborn.submit()
        await asyncio.wait_for(started.wait(), 10)
        # when it is cancelled
        assert await handle.cancel() is True
        # then it ends CANCELLED at once instead of waiting to be retried
        with pytest.raises(jsflow.TaskCancelledError):
            await handle.result(timeout=20)
    assert await handle.status() is TaskStatus.CANCELLED
    assert calls == [1]


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
