"""Core task behaviour against a real nats-server: submit, workers, results, retries, events,
many waiters on one consumer, and the request max age."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from typing import Any

import pytest
from nats.js import api

import jsflow
from jsflow.tasks.app import App
from jsflow.tasks.context import current_task
from jsflow.tasks.errors import TaskTimeoutError
from jsflow.tasks.status import TaskStatus
from jsflow.tasks.streams import (
    DEFAULT_REQUEST_MAX_AGE,
    MAX_AGE_METADATA,
    TASK_STREAM,
    event_subject,
    message_ttl,
    state_bucket,
    task_token,
)
from tests.support.names import second_client, uniq

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_submit_then_result_returns_the_value(jsflow_client: jsflow.Client) -> None:
    # given an app with an add task and a running worker
    app = App(jsflow_client, "t")

    @app.task(name=uniq("add"))
    async def add(a: int, b: int) -> int:
        return a + b

    async with app.worker(concurrency=2):
        # when a call is submitted
        handle = await add.submit(2, b=3)
        # then its result comes back and the status is SUCCEEDED
        assert await handle.result(timeout=10) == 5
        assert await handle.status() is TaskStatus.SUCCEEDED
    assert await add(1, 1) == 2  # calling it still runs it directly


async def test_failure_raises_task_failed_error_with_type_and_message(
    jsflow_client: jsflow.Client,
) -> None:
    # given a task that always raises, without retries
    app = App(jsflow_client, "t")

    @app.task(name=uniq("boom"), retries=0)
    async def boom() -> None:
        raise ValueError("bad input")

    async with app.worker():
        handle = await boom.submit()
        # when its result is awaited, then the remote error's type and message are carried
        with pytest.raises(jsflow.TaskFailedError) as info:
            await handle.result(timeout=10)
    assert info.value.error_type == "ValueError"
    assert info.value.error_message == "bad input"
    assert await handle.status() is TaskStatus.FAILED


async def test_retries_then_success(jsflow_client: jsflow.Client) -> None:
    # given a task failing twice before succeeding, with fast backoff
    app = App(jsflow_client, "t")
    calls: list[int] = []

    @app.task(name=uniq("flaky"), retries=3, backoff=0.05)
    async def flaky() -> str:
        calls.append(current_task().attempt)
        if len(calls) < 3:
            raise RuntimeError("transient")
        return "ok"

    async with app.worker():
        handle = await flaky.submit()
        # then it succeeds on the third attempt
        assert await handle.result(timeout=15) == "ok"
    assert calls == [1, 2, 3]
    assert (await handle.info()).attempt == 3
    kinds = [e.kind async for e in handle.events(idle_timeout=5)]
    assert kinds.count("retrying") == 2 and kinds[-1] == "completed"


async def test_timeout_cancels_the_attempt(jsflow_client: jsflow.Client) -> None:
    # given a task slower than its timeout
    app = App(jsflow_client, "t")
    cancelled = asyncio.Event()

    @app.task(name=uniq("slow"), retries=0, timeout=0.2)
    async def slow() -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async with app.worker():
        handle = await slow.submit()
        # then it fails with a timeout and its coroutine was cancelled
        with pytest.raises(jsflow.TaskFailedError) as info:
            await handle.result(timeout=10)
    assert info.value.error_type == TaskTimeoutError.__name__
    assert cancelled.is_set()


async def test_status_transitions_and_events_replay_late(jsflow_client: jsflow.Client) -> None:
    # given a task that reports progress
    app = App(jsflow_client, "t")
    gate = asyncio.Event()

    @app.task(name=uniq("prog"))
    async def prog() -> int:
        await current_task().progress(50, "half")
        await gate.wait()
        return 1

    handle = await prog.submit()
    # when no worker runs, it is PENDING
    assert await handle.status() is TaskStatus.PENDING
    async with app.worker():
        # while it runs, RUNNING
        for _ in range(100):
            if await handle.status() is TaskStatus.RUNNING:
                break
            await asyncio.sleep(0.05)
        assert await handle.status() is TaskStatus.RUNNING
        gate.set()
        assert await handle.result(timeout=10) == 1
    # then a late reader replays every event from the start, ending at the terminal one
    events = [e async for e in handle.events(idle_timeout=5)]
    assert [e.kind for e in events] == ["requested", "started", "progress", "completed"]
    assert events[2].progress == 50 and events[2].message == "half"


async def test_tasks_submitted_before_a_worker_starts_run_when_it_does(
    jsflow_client: jsflow.Client,
) -> None:
    # given calls submitted while no worker runs
    app = App(jsflow_client, "t")

    @app.task(name=uniq("later"))
    async def later(x: int) -> int:
        return x * 10

    handles = [await later.submit(i) for i in range(5)]
    # when a worker starts, then every one of them runs
    async with app.worker():
        results = await asyncio.gather(*(h.result(timeout=10) for h in handles))
    assert results == [0, 10, 20, 30, 40]


async def test_two_workers_never_both_complete_one_task(jsflow_client: jsflow.Client) -> None:
    # given two workers (two clients) sharing one task's consumer
    name = uniq("once")
    seen: dict[str, list[str]] = {}
    other = await second_client(jsflow_client)
    apps = [App(jsflow_client, "a"), App(other, "b")]
    fns: list[Any] = []
    for i, app in enumerate(apps):

        @app.task(name=name)
        async def work(n: int, _w: str = f"w{i}") -> int:
            seen.setdefault(current_task().id, []).append(_w)
            await asyncio.sleep(0.01)
            return n

        fns.append(work)
    async with other, apps[0].worker(concurrency=8), apps[1].worker(concurrency=8):
        # when 40 tasks are submitted
        handles = [await fns[0].submit(i) for i in range(40)]
        results = await asyncio.gather(*(h.result(timeout=20) for h in handles))
        infos = [await h.info() for h in handles]
    # then each ran and was completed exactly once
    assert results == list(range(40))
    assert all(len(v) == 1 for v in seen.values()) and len(seen) == 40
    assert all(i.status is TaskStatus.SUCCEEDED and i.attempt == 1 for i in infos)


async def test_bad_arguments_raise_before_any_io(jsflow_client: jsflow.Client) -> None:
    # given a task taking one argument
    app = App(jsflow_client, "t")

    @app.task(name=uniq("one"))
    async def one(x: int) -> int:
        return x

    # when submitted with the wrong arguments, then ConfigError
    with pytest.raises(jsflow.ConfigError):
        await one.submit(1, 2)
    with pytest.raises(jsflow.ConfigError):
        App(jsflow_client, "bad name")
    with pytest.raises(jsflow.ConfigError):
        app.task(name="a.b")(one.fn)


async def test_task_concurrency_and_rate_limit_bound_attempts(
    jsflow_client: jsflow.Client,
) -> None:
    # given a task limited to one attempt at a time per worker and a distributed rate limit
    app = App(jsflow_client, "t")
    active = peak = 0

    @app.task(name=uniq("limited"), concurrency=1, rate_limit="50/s")
    async def limited(i: int) -> int:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await asyncio.sleep(0.01)
        active -= 1
        return i

    # when many are submitted to a worker with room for more
    async with app.worker(concurrency=8):
        handles = [await limited.submit(i) for i in range(10)]
        results = await asyncio.gather(*(h.result(timeout=20) for h in handles))
    # then all ran, never two at once
    assert results == list(range(10)) and peak == 1


async def test_an_idle_task_name_does_not_starve_a_busy_one(jsflow_client: jsflow.Client) -> None:
    # given a worker with one slot serving several task names, only one of which has work
    app = App(jsflow_client, "t")

    @app.task(name=uniq("idle1"))
    async def idle1() -> None:
        return None

    @app.task(name=uniq("idle2"))
    async def idle2() -> None:
        return None

    @app.task(name=uniq("busy"))
    async def busy(i: int) -> int:
        return i

    async with app.worker(concurrency=1):
        # when the busy one gets several calls, then they all complete
        handles = [await busy.submit(i) for i in range(5)]
        assert await asyncio.gather(*(h.result(timeout=20) for h in handles)) == list(range(5))


async def test_request_max_age_is_configurable_and_the_default_leaves_it_alone(
    jsflow_server: jsflow.EmbeddedServer,
) -> None:
    def recorded(info: api.StreamInfo) -> float:
        return float((info.config.metadata or {})[MAX_AGE_METADATA])

    # given an app asking the task stream to keep requests for 30 days
    async with await jsflow.connect(jsflow_server.url) as client:
        await App(client, "t", request_max_age=dt.timedelta(days=30)).backend()
        info = await client.js.stream_info(TASK_STREAM)
        # then the stream records 30 days, as the TTL of each message, not a stream max age
        assert recorded(info) == pytest.approx(30 * 24 * 3600.0)
        assert not info.config.max_age and info.config.allow_msg_ttl
        assert await message_ttl(client) == f"{30 * 24 * 3600}s"
    try:
        # when another app opens with the default
        async with await jsflow.connect(jsflow_server.url) as client:
            await App(client, "t").backend()
            info = await client.js.stream_info(TASK_STREAM)
            # then it leaves the existing setting alone, and uses it
            assert recorded(info) == pytest.approx(30 * 24 * 3600.0)
            assert await message_ttl(client) == f"{30 * 24 * 3600}s"
    finally:  # restore the default for the other tests
        async with await jsflow.connect(jsflow_server.url) as client:
            await App(client, "t", request_max_age=DEFAULT_REQUEST_MAX_AGE).backend()
            info = await client.js.stream_info(TASK_STREAM)
            assert recorded(info) == pytest.approx(7 * 24 * 3600.0)


async def test_requests_and_events_carry_the_request_max_age_as_ttl(
    jsflow_client: jsflow.Client,
) -> None:
    # given an app and a worker
    app = App(jsflow_client, "t")
    name = f"ttl_{uuid.uuid4().hex[:8]}"

    @app.task(name=name)
    async def echo(x: int) -> int:
        return x

    async with app.worker():
        # when a task runs to completion
        handle = await echo.submit(1)
        assert await handle.result(timeout=20) == 1
    # then its request and its events expire with the request max age
    ttl = await message_ttl(jsflow_client)
    token = task_token(app.scope, name)
    for kind in ("requested", "completed"):
        subject = event_subject(kind, token, handle.id)
        msg = await jsflow_client.js.get_last_msg(TASK_STREAM, subject)
        assert (msg.headers or {}).get("Nats-TTL") == ttl


async def test_thousand_pending_handles_share_one_consumer(jsflow_client: jsflow.Client) -> None:
    # given 1,200 submitted tasks and a waiter on each result, with no worker yet
    app = App(jsflow_client, "t")

    @app.task(name=uniq("many"))
    async def many(i: int) -> int:
        return i

    handles = await asyncio.gather(*(many.submit(i) for i in range(1200)))
    waiters = [asyncio.ensure_future(h.result(timeout=60)) for h in handles]
    await asyncio.sleep(0.5)
    # then the task-state bucket has a single consumer however many wait
    info = await jsflow_client.js.stream_info(f"KV_{state_bucket(app.scope)}")
    assert info.state.consumer_count <= 2  # the shared watch (+ at most one keys() scan)
    # and when a worker runs, every waiter gets its result
    async with app.worker(concurrency=64):
        results = await asyncio.gather(*waiters)
    assert results == list(range(1200))
