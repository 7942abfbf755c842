"""Task requests: a late duplicate, a resubmit of a finished task and a bare request from
another producer each lead to exactly one run (dependents: test_dag.py; cancels:
test_cancel.py)."""

from __future__ import annotations

import asyncio
import uuid

import pytest

import jsflow
from jsflow.tasks.app import App
from jsflow.tasks.streams import H_MSG_ID, H_TASK_ID, TASK_STREAM, request_subject, task_token
from jsflow.tasks.worker import durable_name
from tests.support.names import uniq
from tests.support.polling import eventually
from tests.support.streams import drained

pytestmark = pytest.mark.asyncio(loop_scope="session")


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
        await drained(jsflow_client, durable_name(slow.name, app.scope), ack_pending=1)
        release.set()
        assert await handle.result(timeout=10) == 7
    assert calls == [7]
    assert (await handle.info()).attempt == 1


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


async def test_a_bare_request_from_another_producer_runs(jsflow_client: jsflow.Client) -> None:
    # given a request published by hand on task.requested.<app>~<name> (no state, bare
    # arguments)
    app = App(jsflow_client, "t")
    name = uniq("bare")

    @app.task(name=name)
    async def bare(x: int) -> int:
        return x * 3

    task_id = uuid.uuid4().hex
    payload = bare.codec.encode_args((7,), {})
    subject = request_subject(task_token(app.scope, name))
    await jsflow_client.js.publish(subject, payload, headers={H_TASK_ID: task_id})
    await app.backend()
    # then a worker creates its state and runs it
    async with app.worker():
        handle = bare.handle(task_id)

        async def present() -> bool:
            return await (await app.backend()).store.get(task_id) is not None

        await eventually(present, "state creation")
        assert await handle.result(timeout=10) == 21
