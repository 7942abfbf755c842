"""Schedules: a bad spec is refused before any I/O and never removes the working schedule;
a replacement leaves no moment without a schedule; far dates are refused, not run at once."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import Callable
from typing import Any

import pytest

import jsflow
from jsflow.tasks.app import App
from jsflow.tasks.schedules import check_spec
from jsflow.tasks.streams import TASK_STREAM

pytestmark = pytest.mark.asyncio(loop_scope="session")


def uniq(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


async def _schedule_messages(client: jsflow.Client, subject: str) -> int:
    info = await client.js.stream_info(TASK_STREAM, subjects_filter=subject)
    return (info.state.subjects or {}).get(subject, 0)


async def _spec_on_server(client: jsflow.Client, subject: str) -> str | None:
    if not await _schedule_messages(client, subject):
        return None
    msg = await client.js.get_last_msg(TASK_STREAM, subject)
    return (msg.headers or {}).get("Nats-Schedule")


async def _until(predicate: Callable[[], bool], what: str) -> None:
    """Wait until ``what`` happened; bounded by the caller's ``asyncio.timeout``."""
    while not predicate():
        await asyncio.sleep(0.05)


def _recorder(app: App, name: str, runs: list[str]) -> Any:
    @app.task(name=name)
    async def beat(tag: str) -> None:
        runs.append(tag)

    return beat


async def test_a_bad_spec_is_refused_and_the_working_schedule_keeps_firing(
    jsflow_client: jsflow.Client,
) -> None:
    async with asyncio.timeout(30):
        # given a working schedule that fires every second
        runs: list[str] = []
        app = App(jsflow_client, "bad_spec")
        beat = _recorder(app, uniq("beat"), runs)
        schedule = await beat.schedule("s", "@every 1s", "old")
        async with app.worker():
            await _until(lambda: len(runs) >= 1, "a first tick")
            # when it is replaced with a spec whose second field is out of range
            with pytest.raises(jsflow.ConfigError, match=r"'61 \* \* \* \* \*'.*second.*0-59"):
                await beat.schedule("s", "61 * * * * *", "new")
            # then the working schedule is still on the server, and keeps firing
            assert await _spec_on_server(jsflow_client, schedule.subject) == "@every 1s"
            seen = len(runs)
            await _until(lambda: len(runs) >= seen + 2, "two more ticks")
            await schedule.cancel()
        assert set(runs) == {"old"}


async def test_a_replacement_is_one_definition_that_fires_with_the_new_arguments(
    jsflow_client: jsflow.Client,
) -> None:
    async with asyncio.timeout(30):
        # given a schedule firing with "old"
        runs: list[str] = []
        app = App(jsflow_client, "replace")
        beat = _recorder(app, uniq("beat"), runs)
        old = await beat.schedule("s", "@every 1s", "old")
        async with app.worker():
            await _until(lambda: "old" in runs, "an old tick")
            # when it is replaced (same id) with new arguments and a new spec
            new = await beat.schedule("s", "*/1 * * * * *", "new")
            # then the server holds exactly one definition: the new one, which fires
            assert new.subject == old.subject
            assert await _schedule_messages(jsflow_client, new.subject) == 1
            assert await _spec_on_server(jsflow_client, new.subject) == "*/1 * * * * *"
            await _until(lambda: "new" in runs, "a new tick")
            await new.cancel()
        assert await _spec_on_server(jsflow_client, new.subject) is None


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("* * * * *", "6 fields"),
        ("0 0 24 * * *", "hour field: 24 is out of range 0-23"),
        ("0 0 0 * 13 *", "month field"),
        ("0 0 0 * * 7", "day of week field"),
        ("5-1 * * * * *", "backwards"),
        ("*/0 * * * * *", "step"),
        ("0 0 0 31 2 *", "no chosen month"),
        ("0 0 0 L * *", "day of month field: 'L'"),
        ("@every 0s", "at least 1s|from 1s"),
        ("@every -5s", "from 1s"),
        ("@every 500ms", "from 1s"),
        ("@every 1x", "Go duration"),
        ("@every 1000000h", "100 years"),
        ("@at 2030-01-01", "with a date"),
        ("@at tomorrow", "RFC 3339"),
        ("@at 2030-02-30T00:00:00Z", "not a valid date"),
        ("@at 9999-12-31T00:00:00Z", "2262-04-11"),
        ("@at 2262-04-12T00:00:00Z", "2262-04-11"),
        ("@minutely", "one of"),
        ("", "needs a cron expression"),
        (42, "must be a str"),
        (None, "must be a str"),
        ("* " * 600, "longer than"),
    ],
)
async def test_a_bad_spec_fails_before_any_io_naming_what_is_wrong(
    jsflow_client: jsflow.Client, spec: Any, says: str
) -> None:
    async with asyncio.timeout(10):
        app = App(jsflow_client, "specs")
        beat = _recorder(app, uniq("beat"), [])
        with pytest.raises(jsflow.ConfigError, match=says):
            await beat.schedule("s", spec, "x")
        # before any I/O: the app never even set its streams up
        assert app._backend is None


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
        beat = _recorder(app, uniq("beat"), [])
        schedule = await beat.schedule("s", f"  {spec} ", "x")
        assert schedule.spec == check_spec(spec) == " ".join(spec.split())
        assert await _spec_on_server(jsflow_client, schedule.subject) == schedule.spec
        await schedule.cancel()


@pytest.mark.parametrize("schedule_id", ["a.b", "", "x" * 129, "with space", 7, "ta>il", "star*"])
async def test_an_illegal_schedule_id_is_refused_before_any_io(
    jsflow_client: jsflow.Client, schedule_id: Any
) -> None:
    async with asyncio.timeout(10):
        app = App(jsflow_client, "ids")
        beat = _recorder(app, uniq("beat"), [])
        with pytest.raises(jsflow.InvalidNameError, match="schedule id"):
            await beat.schedule(schedule_id, "@every 1s", "x")
        assert app._backend is None


@pytest.mark.parametrize(
    ("when", "says"),
    [
        # refused by the app's century bound, or by the schedule's int64 bound
        (dt.datetime(9999, 12, 31, tzinfo=dt.UTC), "2262-04-11|must be <="),
        (dt.datetime(2262, 4, 12, tzinfo=dt.UTC), "2262-04-11|must be <="),
        (dt.datetime(2030, 1, 1), "timezone-aware"),
        (1e9, "when must be datetime"),
        ("2030-01-01T00:00:00Z", "when must be datetime"),
        (dt.datetime.max.replace(tzinfo=dt.UTC), "out of range|2262-04-11|must be <="),
    ],
)
async def test_submit_at_a_time_the_server_cannot_hold_is_refused_not_run_at_once(
    jsflow_client: jsflow.Client, when: Any, says: str
) -> None:
    async with asyncio.timeout(10):
        app = App(jsflow_client, "far")
        beat = _recorder(app, uniq("beat"), [])
        with pytest.raises(jsflow.ConfigError, match=says):
            await beat.submit_at(when, "x")
        assert app._backend is None


@pytest.mark.parametrize("delay", [1e20, 1e10, "5", float("nan"), -1.0, True])
async def test_submit_in_an_out_of_range_delay_is_a_config_error(
    jsflow_client: jsflow.Client, delay: Any
) -> None:
    async with asyncio.timeout(10):
        app = App(jsflow_client, "delay")
        beat = _recorder(app, uniq("beat"), [])
        with pytest.raises(jsflow.ConfigError, match="delay"):
            await beat.submit_in(delay, "x")
