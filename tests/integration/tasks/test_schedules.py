"""Schedules on the server's message scheduler: @at and recurring, fired once per tick; a
bad spec never removes the working schedule, a replacement leaves no moment without one,
and schedules outlive the request max age (specs refused before I/O:
unit/test_schedule_specs.py)."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections import Counter

import nats.js.errors
import pytest
from nats.js import api

import jsflow
from jsflow.tasks.app import App
from jsflow.tasks.context import current_task
from jsflow.tasks.schedules import check_spec
from jsflow.tasks.status import TaskStatus
from jsflow.tasks.streams import (
    MAX_AGE_METADATA,
    TASK_STREAM,
    message_ttl,
    schedule_subject,
    task_token,
)
from tests.support.names import second_client, uniq
from tests.support.polling import eventually
from tests.support.tasks import recorder

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_schedule_at_fires_once_with_two_workers(jsflow_client: jsflow.Client) -> None:
    # given two workers (two connections) for one task name
    name = uniq("at")
    runs: Counter[str] = Counter()
    other = await second_client(jsflow_client)
    apps = [App(jsflow_client, "a"), App(other, "a")]  # one app, two processes
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


async def _gone(client: jsflow.Client, subject: str) -> bool:
    try:
        await client.js.get_last_msg(TASK_STREAM, subject)
    except nats.js.errors.NotFoundError:
        return True
    return False


async def test_schedules_outlive_the_request_max_age_while_requests_expire() -> None:
    # given a server of its own (the max age applies to the whole task stream) and an app
    # whose requests and events live 2 s
    async with jsflow.EmbeddedServer() as server, await jsflow.connect(server.url) as client:
        app = App(client, "ttl", request_max_age=2)
        runs: list[str] = []

        @app.task(name="beat")
        async def beat() -> None:
            runs.append(current_task().id)

        @app.task(name="later")
        async def later(x: int) -> int:
            return x

        @app.task(name="idle")
        async def idle() -> None:  # no worker serves it
            return None

        schedule = await beat.schedule("s", "@every 1s")
        at = await later.submit_at(dt.datetime.now(dt.UTC) + dt.timedelta(seconds=4), 7)
        stale = await idle.submit()
        async with app.worker(tasks=["beat", "later"]):
            await eventually(lambda: _ran(runs, 1), "a first tick", timeout=30)
            first = runs[0]
            # when the max age has passed for an unconsumed request and an old event
            await eventually(
                lambda: _gone(client, f"task.requested.{task_token(app.scope, 'idle')}.{stale.id}"),
                "the request expires",
                timeout=30,
            )
            await eventually(
                lambda: _gone(client, f"task.completed.{task_token(app.scope, 'beat')}.{first}"),
                "the event expires",
                timeout=30,
            )
            # then the recurring schedule is still there and keeps firing
            assert not await _gone(client, schedule.subject)
            seen = len(runs)
            await eventually(lambda: _ran(runs, seen + 2), "two more ticks", timeout=30)
            # and the one-shot schedule, due after the max age, fired once and is gone
            assert await at.result(timeout=30) == 7
            assert await _gone(client, schedule_subject(task_token(app.scope, "later"), at.id))
            await schedule.cancel()
        info = await client.js.stream_info(TASK_STREAM)
        assert not info.config.max_age and info.config.allow_msg_ttl


async def _ran(runs: list[str], n: int) -> bool:
    return len(runs) >= n


async def test_a_stream_with_a_max_age_is_migrated_keeping_that_age() -> None:
    # given a task stream as an older jsflow created it, with a stream-wide max age
    async with jsflow.EmbeddedServer() as server, await jsflow.connect(server.url) as client:
        await client.js.add_stream(
            api.StreamConfig(
                name=TASK_STREAM,
                subjects=["task.>"],
                max_age=3600.0,
                allow_atomic=True,
                allow_msg_schedules=True,
            )
        )
        # when an app with the default request max age opens it
        await App(client, "m").backend()
        # then the age moved from the stream to the messages
        config = (await client.js.stream_info(TASK_STREAM)).config
        assert not config.max_age and config.allow_msg_ttl
        assert float((config.metadata or {})[MAX_AGE_METADATA]) == 3600.0
        assert await message_ttl(client) == "3600s"


async def _schedule_messages(client: jsflow.Client, subject: str) -> int:
    info = await client.js.stream_info(TASK_STREAM, subjects_filter=subject)
    return (info.state.subjects or {}).get(subject, 0)


async def _spec_on_server(client: jsflow.Client, subject: str) -> str | None:
    if not await _schedule_messages(client, subject):
        return None
    msg = await client.js.get_last_msg(TASK_STREAM, subject)
    return (msg.headers or {}).get("Nats-Schedule")


async def test_a_bad_spec_is_refused_and_the_working_schedule_keeps_firing(
    jsflow_client: jsflow.Client,
) -> None:
    async with asyncio.timeout(30):
        # given a working schedule that fires every second
        runs: list[str] = []
        app = App(jsflow_client, "bad_spec")
        beat = recorder(app, uniq("beat"), runs)
        schedule = await beat.schedule("s", "@every 1s", "old")
        async with app.worker():
            await eventually(lambda: len(runs) >= 1, "a first tick", timeout=30)
            # when it is replaced with a spec whose second field is out of range
            with pytest.raises(jsflow.ConfigError, match=r"'61 \* \* \* \* \*'.*second.*0-59"):
                await beat.schedule("s", "61 * * * * *", "new")
            # then the working schedule is still on the server, and keeps firing
            assert await _spec_on_server(jsflow_client, schedule.subject) == "@every 1s"
            seen = len(runs)
            await eventually(lambda: len(runs) >= seen + 2, "two more ticks", timeout=30)
            await schedule.cancel()
        assert set(runs) == {"old"}


async def test_a_replacement_is_one_definition_that_fires_with_the_new_arguments(
    jsflow_client: jsflow.Client,
) -> None:
    async with asyncio.timeout(30):
        # given a schedule firing with "old"
        runs: list[str] = []
        app = App(jsflow_client, "replace")
        beat = recorder(app, uniq("beat"), runs)
        old = await beat.schedule("s", "@every 1s", "old")
        async with app.worker():
            await eventually(lambda: "old" in runs, "an old tick", timeout=30)
            # when it is replaced (same id) with new arguments and a new spec
            new = await beat.schedule("s", "*/1 * * * * *", "new")
            # then the server holds exactly one definition: the new one, which fires
            assert new.subject == old.subject
            assert await _schedule_messages(jsflow_client, new.subject) == 1
            assert await _spec_on_server(jsflow_client, new.subject) == "*/1 * * * * *"
            await eventually(lambda: "new" in runs, "a new tick", timeout=30)
            await new.cancel()
        assert await _spec_on_server(jsflow_client, new.subject) is None


@pytest.mark.parametrize(
    "spec",
    [
        "0 */5 * * * *",
        "0 0 9 * * MON-FRI",
        "0 0 0 ? JAN,jul *",
        "5/15 * * * * *",
        "0 0 0 29 2 *",
        "0 0 0 31 2 MON",
        "@every 1h30m",
        "@every 1.5s",
        "@hourly",
        "@annually",
        "@at 2262-04-11T00:00:00Z",
        "@at 2100-01-01T12:00:00.5+02:00",
    ],
)
async def test_specs_check_spec_accepts_are_accepted_by_the_server(
    jsflow_client: jsflow.Client, spec: str
) -> None:
    async with asyncio.timeout(10):
        app = App(jsflow_client, "good")
        beat = recorder(app, uniq("beat"), [])
        schedule = await beat.schedule("s", f"  {spec} ", "x")
        assert schedule.spec == check_spec(spec) == " ".join(spec.split())
        assert await _spec_on_server(jsflow_client, schedule.subject) == schedule.spec
        await schedule.cancel()
