"""The stored task state is the truth: of racing transitions exactly one wins, a worker
starts from the stored state, and a waiter learns when the state is gone."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import jsflow
from jsflow._proto import task_pb2
from jsflow.tasks.app import App
from jsflow.tasks.lifecycle import Declined, new_state, set_status, status_of
from jsflow.tasks.status import TaskStatus
from tests.support.names import second_client, uniq


@pytest.mark.asyncio(loop_scope="session")
@settings(max_examples=6)
@given(racers=st.integers(2, 6))
async def test_concurrent_finishers_of_one_attempt_have_exactly_one_winner(
    jsflow_client: jsflow.Client, racers: int
) -> None:
    # given a RUNNING task attempt and several clients racing to complete it
    app = App(jsflow_client, "t")
    backend = await app.backend()
    task_id = uuid.uuid4().hex
    state = new_state(task_id, "race", b"")
    set_status(state, TaskStatus.RUNNING)
    state.attempt = 1
    await backend.store.create(state)
    clients = [await second_client(jsflow_client) for _ in range(racers)]
    try:
        stores = [(await App(c, "t").backend()).store for c in clients]

        def finish(s: Any) -> None:
            if status_of(s) is not TaskStatus.RUNNING or s.attempt != 1:
                raise Declined
            set_status(s, TaskStatus.SUCCEEDED)

        # when they all compare-and-set at once
        outcomes = await asyncio.gather(*(st_.transition(task_id, finish) for st_ in stores))
    finally:
        for c in clients:
            await c.close()
    # then exactly one transition won
    assert sum(o is not None for o in outcomes) == 1


async def test_a_state_changed_after_submit_still_starts_from_the_store(
    jsflow_client: jsflow.Client,
) -> None:
    # given a submitted task whose state changed after its request was published
    app = App(jsflow_client, "t")

    @app.task(name=uniq("changed"))
    async def changed() -> str:
        return "ran"

    handle = await changed.submit()
    backend = await app.backend()

    def touch(s: task_pb2.TaskState) -> None:
        s.worker = "someone-else"

    assert await backend.store.transition(handle.id, touch) is not None
    # when a worker takes the request (its carried revision is stale)
    async with app.worker():
        # then it falls back to the stored state and runs the task once
        assert await handle.result(timeout=10) == "ran"
    info = await handle.info()
    assert info.attempt == 1 and info.status is TaskStatus.SUCCEEDED


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
