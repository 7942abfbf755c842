"""Schedule specs, ids and release times: a bad one is refused with a typed error saying what
is wrong, before any I/O (apps without a client; no server). Far dates are refused, not run
at once."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import pytest

import jsflow
from jsflow.tasks.app import App
from tests.support.names import uniq
from tests.support.tasks import recorder

pytestmark = pytest.mark.asyncio(loop_scope="session")


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
async def test_a_bad_spec_fails_before_any_io_naming_what_is_wrong(spec: Any, says: str) -> None:
    async with asyncio.timeout(10):
        app = App(None, "specs")
        beat = recorder(app, uniq("beat"), [])
        with pytest.raises(jsflow.ConfigError, match=says):
            await beat.schedule("s", spec, "x")
        # before any I/O: the app never even set its streams up
        with pytest.raises(jsflow.ConfigError, match="not opened"):
            app.opened_backend()


@pytest.mark.parametrize("schedule_id", ["a.b", "", "x" * 129, "with space", 7, "ta>il", "star*"])
async def test_an_illegal_schedule_id_is_refused_before_any_io(
    schedule_id: Any,
) -> None:
    async with asyncio.timeout(10):
        app = App(None, "ids")
        beat = recorder(app, uniq("beat"), [])
        with pytest.raises(jsflow.InvalidNameError, match="schedule id"):
            await beat.schedule(schedule_id, "@every 1s", "x")
        with pytest.raises(jsflow.ConfigError, match="not opened"):
            app.opened_backend()


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
    when: Any, says: str
) -> None:
    async with asyncio.timeout(10):
        app = App(None, "far")
        beat = recorder(app, uniq("beat"), [])
        with pytest.raises(jsflow.ConfigError, match=says):
            await beat.submit_at(when, "x")
        with pytest.raises(jsflow.ConfigError, match="not opened"):
            app.opened_backend()


@pytest.mark.parametrize("delay", [1e20, 1e10, "5", float("nan"), -1.0, True])
async def test_submit_in_an_out_of_range_delay_is_a_config_error(
    delay: Any,
) -> None:
    async with asyncio.timeout(10):
        app = App(None, "soon")  # offline: I/O would fail with "no client"
        beat = recorder(app, uniq("beat"), [])
        with pytest.raises(jsflow.ConfigError, match="delay"):
            await beat.submit_in(delay, "x")
