"""Races found in review: duplicate requests, resubmits of waiting tasks, cancel vs retry."""

from __future__ import annotations

import asyncio
import uuid

import pytest

import jsflow
from jsflow.tasks.app import App
from jsflow.tasks.status import TaskStatus
from jsflow.tasks.streams import H_MSG_ID, H_TASK_ID, TASK_STREAM, request_subject, task_token
from jsflow.tasks.worker import durable_name

pytestmark = pytest.mark.asyncio(loop_scope="session")


def uniq(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


async def _drained(app: App, name: str, ack_pending: int) -> None:
    """Until the consumer of ``app``'s task ``name`` has delivered everything and holds
    ``ack_pending``."""
    assert app.client is not None
    for _ in range(500):
        info = await app.client.js.consumer_info(TASK_STREAM, durable_name(name, app.scope))
        if info.num_pending == 0 and info.num_ack_pending == ack_pending:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"consumer of {name} did not drain: {info}")


async def test_late_duplicate_request_does_not_start_a_second_attempt(
    jsflow_client: jsflow.Client,
) -> None:
    # given a task running on a worker
    app = App(jsflow_client, "t")
    calls: list[int] = []
    started, release = asyncio.Event(), asyncio.Event()

    @app.task(name=uniq("dup"))
    async def slow(x: int) -> int:
        calls.append(x)
        started.set()
        await release.wait()
        return x

    async with app.worker(concurrency=4):
        handle = await slow.submit(7)
        await asyncio.wait_for(started.wait(), 10)
        # when a second request for it arrives after the duplicate window (another msg id)
        args = (await app.backend()).store
        state = await args.get(handle.id)
        assert state is not None
        await jsflow_client.js.publish(
            request_subject(task_token(app.scope, slow.name), handle.id),
            bytes(state.args),
            headers={H_TASK_ID: handle.id, H_MSG_ID: f"{handle.id}-late"},
        )
        # then the copy is acked without running: only the owner's delivery stays pending
        await _drained(app, slow.name, ack_pending=1)
        release.set()
        assert await handle.result(timeout=10) == 7
    assert calls == [7]
    assert (await handle.info()).attempt == 1


async def test_resubmitting_a_waiting_dependent_does_not_run_it_early(
    jsflow_client: jsflow.Client,
) -> None:
    # given b depending on a, a still running
    app = App(jsflow_client, "t")
    order: list[str] = []
    a_started, a_release = asyncio.Event(), asyncio.Event()

    @app.task(name=uniq("dep"))
    async def step(label: str) -> str:
        order.append(label)
        if label == "a":
            a_started.set()
            await a_release.wait()
        return label

    async with app.worker(concurrency=4):
        a = await step.submit("a")
        await asyncio.wait_for(a_started.wait(), 10)
        b_id = uniq("b")
        b = await step.submit_with(("b",), task_id=b_id, depends_on=[a])
        # when b is submitted again under its id (an idempotent retry of the caller)
        again = await step.submit_with(("b",), task_id=b_id)
        assert again.id == b.id
        await _drained(app, step.name, ack_pending=1)
        # then b still waits for a, and runs once after it
        assert await b.status() is TaskStatus.PENDING
        a_release.set()
        assert await b.result(timeout=10) == "b"
    assert order == ["a", "b"]


async def test_resubmitting_a_finished_task_publishes_no_new_request(
    jsflow_client: jsflow.Client,
) -> None:
    # given a finished task with an explicit id
    app = App(jsflow_client, "t")
    calls: list[int] = []

    @app.task(name=uniq("once"))
    async def once(x: int) -> int:
        calls.append(x)
        return x

    task_id = uniq("id")
    async with app.worker():
        await (await once.submit_with((1,), task_id=task_id)).result(timeout=10)
        before = await jsflow_client.js.stream_info(TASK_STREAM, subjects_filter=">")
        # when it is submitted again
        handle = await once.submit_with((1,), task_id=task_id)
        # then its result is the first one and nothing new was requested
        assert await handle.result(timeout=10) == 1
    subject = request_subject(task_token(app.scope, once.name), task_id)
    info = await jsflow_client.js.stream_info(TASK_STREAM, subjects_filter=subject)
    assert info.state.subjects == {subject: 1}
    assert before.state.messages >= 1
    assert calls == [1]


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


async def test_result_raises_not_found_when_the_state_is_deleted_while_waiting(
    jsflow_client: jsflow.Client,
) -> None:
    # given a pending task (no worker) whose result is awaited
    app = App(jsflow_client, "t")

    @app.task(name=uniq("gone"))
    async def gone() -> None:
        return None

    handle = await gone.submit()
    waiter = asyncio.ensure_future(handle.result(timeout=20))
    backend = await app.backend()
    await asyncio.sleep(0)
    # when its state is deleted (an operator purging the bucket)
    while not waiter.done():
        await backend.store.store.delete(handle.id)
        await asyncio.wait([waiter], timeout=0.2)
    # then the waiter gets a typed error instead of hanging
    with pytest.raises(jsflow.TaskError):
        await waiter
    await backend.store.store.delete(handle.id)
