"""Task events: one log per task, as durable as the task's state (a lost terminal event comes
back on redelivery, never twice); followers cost the server nothing each, see every event
once in order across replay and live, resume after a sequence, and end when closed or when
their client closes; options and ids are checked before any I/O."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

import jsflow
from jsflow.tasks import events as events_module
from jsflow.tasks.app import App
from jsflow.tasks.context import current_task
from jsflow.tasks.events import TaskEvents
from jsflow.tasks.lifecycle import new_state, set_status
from jsflow.tasks.status import TaskStatus
from jsflow.tasks.streams import TASK_STREAM, event_subject, task_filter, task_token
from tests.support.names import uniq

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest_asyncio.fixture(loop_scope="session")
async def own_client() -> AsyncIterator[jsflow.Client]:
    """A client on a server of its own: no other test's consumers come and go on it."""
    async with jsflow.EmbeddedServer() as server:
        client = await jsflow.connect(server.url)
        async with client:
            yield client


async def _consumers(client: jsflow.Client) -> int:
    info = await client.js.stream_info(TASK_STREAM)
    return int(info.state.consumer_count)


async def test_1200_followers_cost_no_consumers_and_each_sees_its_events_once_in_order(
    own_client: jsflow.Client,
) -> None:
    async with asyncio.timeout(90):
        # given 400 pending tasks and three followers of each (1,200 in all)
        app = App(own_client, "t")

        @app.task(name=uniq("echo"))
        async def echo(i: int) -> int:
            return i

        handles = await asyncio.gather(*(echo.submit(i) for i in range(400)))
        before = await _consumers(own_client)
        followers = [h.events(idle_timeout=60) for h in handles for _ in range(3)]
        firsts = await asyncio.gather(*(anext(f) for f in followers))
        assert {e.kind for e in firsts} == {"requested"}
        # when they all follow at once, then the stream has no more consumers than before
        assert await _consumers(own_client) == before

        async def rest(f: TaskEvents) -> list[str]:
            kinds = ["requested"]
            async for e in f:
                assert e.task_id == f.task_id
                kinds.append(e.kind)
            return kinds

        collecting = asyncio.gather(*(rest(f) for f in followers))
        # and a worker started while they follow runs the tasks (no consumer was used up)
        async with app.worker(concurrency=64):
            seen = await collecting
        # and each got its task's events in order, exactly once
        assert all(kinds == ["requested", "started", "completed"] for kinds in seen)


@pytest.mark.parametrize("direct", [False, True], ids=["stream-get", "direct-get"])
async def test_a_follower_joining_mid_run_gets_replay_then_live_without_gap_or_repeat(
    own_client: jsflow.Client, direct: bool
) -> None:
    async with asyncio.timeout(30):
        # given a task that reports progress, then waits, then reports more
        app = App(own_client, "t")
        # a tasks stream that serves direct gets (as jsflow creates it), or one that does not
        # (an operator's), where followers fall back to stream message gets
        await App(own_client, "setup").backend()
        info = await own_client.js.stream_info(TASK_STREAM)
        if info.config.allow_direct != direct:
            info.config.allow_direct = direct
            await own_client.js.update_stream(info.config)
        halfway = asyncio.Event()
        go_on = asyncio.Event()

        @app.task(name=uniq("prog"))
        async def prog() -> None:
            for p in range(1, 4):
                await current_task().progress(p)
            halfway.set()
            await go_on.wait()
            for p in range(4, 7):
                await current_task().progress(p)

        async with app.worker():
            handle = await prog.submit()
            await halfway.wait()
            # when a follower starts after half of the events were stored
            follower = handle.events(idle_timeout=10)
            first = [await anext(follower) for _ in range(5)]
            assert events_module._hub_for(own_client).direct is direct
            go_on.set()
            later = [e async for e in follower]
        events = first + later
        # then it sees every event once, in order, across the replay/live seam
        assert [e.kind for e in events] == ["requested", "started"] + ["progress"] * 6 + [
            "completed"
        ]
        assert [e.progress for e in events if e.kind == "progress"] == [1, 2, 3, 4, 5, 6]


async def test_a_duplicate_publish_the_stream_dropped_is_not_shown_to_followers(
    own_client: jsflow.Client,
) -> None:
    async with asyncio.timeout(20):
        # given a follower of a pending task
        app = App(own_client, "t")

        @app.task(name=uniq("dup"))
        async def dup() -> int:
            return 1

        task_id = uuid.uuid4().hex
        handle = await dup.submit_with(task_id=task_id)
        follower = handle.events(idle_timeout=10)
        assert (await anext(follower)).kind == "requested"
        # when it is resubmitted (its request published again, dropped by the stream as a
        # duplicate, though core subscribers see it) and then runs
        await dup.submit_with(task_id=task_id)
        async with app.worker():
            rest = [e.kind async for e in follower]
        # then the follower saw each stored event once
        assert rest == ["started", "completed"]


async def test_aclose_releases_a_follower_at_once(own_client: jsflow.Client) -> None:
    async with asyncio.timeout(15):
        # given a follower of a pending task that has read its first event
        app = App(own_client, "t")

        @app.task(name=uniq("idle"))
        async def idle() -> None:
            return None

        handle = await idle.submit()
        follower = handle.events(idle_timeout=10)
        assert (await anext(follower)).kind == "requested"
        hub = events_module._hub_for(own_client)
        assert handle.id in hub._followers
        # when it is closed, then its registration is gone and it ends
        await follower.aclose()
        assert handle.id not in hub._followers
        with pytest.raises(StopAsyncIteration):
            await anext(follower)


async def test_closing_the_client_ends_its_followers_with_connection_closed(
    jsflow_server: jsflow.EmbeddedServer,
) -> None:
    async with asyncio.timeout(15):
        # given a follower waiting for the next event of a pending task
        client = await jsflow.connect(jsflow_server.url)
        app = App(client, "t")

        @app.task(name=uniq("never"))
        async def never() -> None:
            return None

        handle = await never.submit()
        follower = handle.events()
        assert (await anext(follower)).kind == "requested"
        waiting = asyncio.ensure_future(anext(follower))
        await asyncio.sleep(0.05)
        # when the client closes, then the follower ends with a typed error
        await client.close()
        with pytest.raises(jsflow.ConnectionClosedError):
            await waiting


async def test_wrong_typed_options_and_ids_are_config_errors_naming_them(
    jsflow_client: jsflow.Client,
) -> None:
    app = App(jsflow_client, "t")

    @app.task(name=uniq("opt"))
    async def opt() -> None:
        return None

    handle = await opt.submit()
    with pytest.raises(jsflow.ConfigError, match="idle_timeout"):
        handle.events(idle_timeout="5")  # type: ignore[arg-type]
    with pytest.raises(jsflow.ConfigError, match="timeout"):
        await handle.result(timeout="1")  # type: ignore[arg-type]
    with pytest.raises(jsflow.ConfigError, match="task id"):
        opt.handle("no spaces allowed")
    with pytest.raises(jsflow.ConfigError, match="task id"):
        TaskEvents(jsflow_client, "x" * 5000)


async def test_each_event_is_stored_once_in_the_task_stream(jsflow_client: jsflow.Client) -> None:
    # given a task that ran to completion
    app = App(jsflow_client, "t")
    name = uniq("once")

    @app.task(name=name)
    async def once() -> int:
        return 1

    async with app.worker():
        handle = await once.submit()
        await handle.result(timeout=10)
        kinds = [e.kind async for e in handle.events(idle_timeout=5)]
    # then its log replays requested, started, completed
    assert kinds == ["requested", "started", "completed"]
    # and every one of them is a single message on task.<kind>.<app>~<name>.<id>
    token = task_token(app.scope, name)
    info = await jsflow_client.js.stream_info(TASK_STREAM, subjects_filter=task_filter(handle.id))
    assert info.state.subjects == {
        f"task.requested.{token}.{handle.id}": 1,
        f"task.started.{token}.{handle.id}": 1,
        f"task.completed.{token}.{handle.id}": 1,
    }


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
