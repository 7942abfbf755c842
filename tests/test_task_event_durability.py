"""Task events are as durable as task states: a finished task whose terminal event was
lost gets it back when its request comes again."""

from __future__ import annotations

import asyncio
import uuid

import pytest

import jsflow
from jsflow.tasks.app import App
from jsflow.tasks.lifecycle import new_state, set_status
from jsflow.tasks.status import TaskStatus
from jsflow.tasks.streams import TASK_STREAM, event_subject, task_filter

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def _kinds(client: jsflow.Client, token: str, task_id: str) -> list[str]:
    info = await client.js.stream_info(TASK_STREAM, subjects_filter=task_filter(task_id, token))
    return sorted((info.state.subjects or {}).keys())


async def test_a_finished_task_whose_completed_event_was_lost_gets_it_on_redelivery(
    jsflow_client: jsflow.Client,
) -> None:
    # A worker recorded SUCCEEDED, then the completion event's publish failed (a failover)
    # so the request stayed unacked and comes back: followers must still see the end.
    app = App(jsflow_client, f"dur{uuid.uuid4().hex[:6]}")

    @app.task
    async def work() -> int:
        raise AssertionError("a finished task must not run again")

    backend = await app.backend()
    task_id = uuid.uuid4().hex
    state = new_state(task_id, "work", work.codec.encode_args((), {}), "")
    revision = await backend.store.create(state)
    assert revision
    subject, body, headers = backend.requests.message(state, task_id, revision)
    done = await backend.store.get(task_id)
    assert done is not None
    set_status(done, TaskStatus.SUCCEEDED)
    assert await backend.store.compare_and_set(done, revision)
    await jsflow_client.js.publish(subject, body, headers=headers)
    handle = await app.handle(task_id)

    async with asyncio.timeout(30), app.worker():
        kinds = [event.kind async for event in handle.events()]
    assert kinds[-1] == "completed"
    assert event_subject("completed", backend.token("work"), task_id) in await _kinds(
        jsflow_client, backend.token("work"), task_id
    )


async def test_a_redelivered_finished_task_does_not_repeat_a_stored_terminal_event(
    jsflow_client: jsflow.Client,
) -> None:
    app = App(jsflow_client, f"dur{uuid.uuid4().hex[:6]}")
    runs = 0

    @app.task
    async def once() -> int:
        nonlocal runs
        runs += 1
        return 7

    async with asyncio.timeout(30), app.worker():
        handle = await once.submit()
        assert await handle.result(timeout=20) == 7
        backend = await app.backend()
        state = await backend.store.get(handle.id)
        assert state is not None
        # The same request again (as after a lost ack): acked, no second run, no second event.
        subject, body, headers = backend.requests.message(state, f"{handle.id}-again", 0)
        await jsflow_client.js.publish(subject, body, headers=headers)
        await asyncio.sleep(1.0)
    assert runs == 1
    completed = event_subject("completed", backend.token("once"), handle.id)
    info = await jsflow_client.js.stream_info(TASK_STREAM, subjects_filter=completed)
    assert (info.state.subjects or {}).get(completed) == 1


async def test_a_follower_resumed_after_a_sequence_gets_exactly_the_events_after_it(
    jsflow_client: jsflow.Client,
) -> None:
    app = App(jsflow_client, f"dur{uuid.uuid4().hex[:6]}")

    @app.task
    async def steps() -> int:
        ctx = jsflow.current_task()
        for p in (25, 50, 75):
            await ctx.progress(p)
        return 1

    async with asyncio.timeout(30), app.worker():
        handle = await steps.submit()
        everything = [e async for e in handle.events()]
        assert [e.kind for e in everything][-1] == "completed"
        seqs = [e.seq for e in everything]
        assert all(s > 0 for s in seqs) and seqs == sorted(set(seqs))
        for cut in range(len(everything)):
            rest = [e async for e in handle.events(after_seq=everything[cut].seq)]
            assert rest == everything[cut + 1 :]
