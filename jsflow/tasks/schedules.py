"""Run tasks later or repeatedly with the server's message schedules (NATS 2.12+).

A schedule is a message on ``task.schedule.<name>.<id>`` carrying ``Nats-Schedule``
(``@at <RFC 3339>``, a cron expression or ``@every <duration>``) and
``Nats-Schedule-Target: task.requested.<name>``; the server publishes the body to the target
when due, once per tick, so it fires once however many workers run.

The server keeps one schedule per subject: publishing a schedule on the subject of an
existing one replaces it (the older message is removed, measured on nats-server 2.15), so a
schedule is replaced by publishing the new definition, without a moment with none. Specs are
checked here before any I/O, with the server's own rules (measured), so a bad one fails with
a :class:`ConfigError` that says what is wrong and never touches the schedule in place.

A schedule message has no TTL (the task stream has no stream-wide max age either), so a
recurring schedule lives until cancelled and an ``@at`` one until it fired (the server then
removes it); the requests it fires expire after the request max age (``Nats-Schedule-TTL``).
"""

from __future__ import annotations

import calendar
import datetime as dt
import math
import re
import uuid
from collections.abc import Awaitable, Callable

from jsflow._js import js_errors, map_nats_errors
from jsflow._validate import MAX_DURATION, MAX_KEY_LEN, check_name, duration, one_of, shorten
from jsflow.errors import ConfigError
from jsflow.tasks.backend import TaskBackend
from jsflow.tasks.lifecycle import new_state
from jsflow.tasks.streams import (
    H_SCHEDULE_ID,
    H_SCHEDULE_TTL,
    H_TTL,
    TASK_STREAM,
    message_ttl,
    request_subject,
    schedule_subject,
    validate_name,
)

__all__ = ["Schedule", "check_spec", "schedule_cron", "submit_at"]

_SCHEDULE = "Nats-Schedule"
_TARGET = "Nats-Schedule-Target"

# The server keeps times as int64 nanoseconds since 1970: a later "@at" (9999-12-31 as
# "never") overflows and fires at once, so it is refused here.
_AT_MAX = dt.datetime(2262, 4, 11, 23, 47, 16, tzinfo=dt.UTC)
_AT_MIN = dt.datetime(1677, 9, 21, 0, 12, 44, tzinfo=dt.UTC)
_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(\.\d+)?(?:(Z)|([+-])(\d{2}):(\d{2}))"
)
# Go's time.ParseDuration: one or more <number><unit>, with an optional sign in front.
_GO_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,  # micro sign
    "μs": 1e-6,  # Greek mu
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_GO_PART = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_MIN_EVERY = 1.0  # the server refuses "@every" intervals under one second (measured)
_MACROS = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")
_MONTHS = {m.upper(): i for i, m in enumerate(calendar.month_abbr) if m}
_DAYS = {d.upper(): (i + 1) % 7 for i, d in enumerate(calendar.day_abbr)}  # SUN = 0
# The six cron fields: name, lowest, highest, names allowed instead of numbers.
_CRON_FIELDS: tuple[tuple[str, int, int, dict[str, int]], ...] = (
    ("second", 0, 59, {}),
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day of month", 1, 31, {}),
    ("month", 1, 12, _MONTHS),
    ("day of week", 0, 6, _DAYS),
)
_CRON_ITEM = re.compile(r"(\*|\?|[A-Za-z0-9]+)(?:-([A-Za-z0-9]+))?(?:/(\d+))?")


def _bad(spec: str, why: str) -> ConfigError:
    return ConfigError(f"invalid schedule {shorten(spec)}: {why}")


def _parse_at(spec: str, text: str) -> dt.datetime:
    match = _RFC3339.fullmatch(text)
    if match is None:
        raise _bad(spec, "@at needs an RFC 3339 time with a date, e.g. 2030-01-31T12:00:00Z")
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    fraction, zulu, sign, off_h, off_m = match.groups()[6:]
    try:
        offset = dt.timedelta(0) if zulu else dt.timedelta(hours=int(off_h), minutes=int(off_m))
        tz = dt.timezone(-offset if sign == "-" else offset)
        when = dt.datetime(year, month, day, hour, minute, second, tzinfo=tz)
        when += dt.timedelta(seconds=float(fraction or 0))
    except (ValueError, OverflowError) as exc:
        raise _bad(spec, f"@at time {text!r} is not a valid date and time ({exc})") from None
    if not _AT_MIN <= when <= _AT_MAX:
        raise _bad(
            spec, f"@at time must be between {_AT_MIN:%Y-%m-%d} and {_AT_MAX:%Y-%m-%d} (UTC)"
        )
    return when


def _go_duration(spec: str, text: str) -> float:
    body = text[1:] if text[:1] in "+-" else text
    total = 0.0
    pos = 0
    while pos < len(body):
        match = _GO_PART.match(body, pos)
        if match is None:
            break
        total += float(match.group(1)) * _GO_UNITS[match.group(2)]
        pos = match.end()
    if not body or pos != len(body):
        raise _bad(spec, f"@every needs a Go duration such as 30s, 5m or 1h30m, not {text!r}")
    if text.startswith("-"):
        total = -total
    try:
        return duration("@every interval", total, minimum=_MIN_EVERY)
    except ConfigError:
        years = MAX_DURATION / (365 * 86400)
        raise _bad(spec, f"@every interval must be from 1s to {years:.0f} years") from None


def _cron_value(spec: str, field: str, token: str, names: dict[str, int]) -> int:
    if token.isdigit():
        return int(token)
    value = names.get(token.upper())
    if value is None:
        kind = "a number or name" if names else "a number"
        raise _bad(spec, f"{field} field: {token!r} is not {kind}")
    return value


def _cron_field(spec: str, field: tuple[str, int, int, dict[str, int]], text: str) -> set[int]:
    """The values one cron field matches (an error when it matches none or is malformed)."""
    name, low, high, names = field
    values: set[int] = set()
    for item in text.split(","):
        match = _CRON_ITEM.fullmatch(item)
        if match is None:
            raise _bad(spec, f"{name} field: {item!r} is not a value, range, list or step")
        start, end, step = match.groups()
        if start in ("*", "?"):
            if end is not None:
                raise _bad(spec, f"{name} field: {item!r} is not a value, range, list or step")
            first, last = low, high
        else:
            first = _cron_value(spec, name, start, names)
            # "5/15" means from 5 to the end in steps of 15.
            last = _cron_value(spec, name, end, names) if end else (high if step else first)
        for value in (first, last):
            if not low <= value <= high:
                raise _bad(spec, f"{name} field: {value} is out of range {low}-{high}")
        if first > last:
            raise _bad(spec, f"{name} field: range {item!r} runs backwards")
        stride = int(step) if step is not None else 1
        if stride < 1:
            raise _bad(spec, f"{name} field: step in {item!r} must be at least 1")
        values.update(range(first, last + 1, stride))
    return values


def _check_cron(spec: str, fields: list[str]) -> None:
    if len(fields) != len(_CRON_FIELDS):
        raise _bad(
            spec,
            f"a cron expression has 6 fields (second minute hour day-of-month month "
            f"day-of-week), got {len(fields)}",
        )
    matched = [_cron_field(spec, f, text) for f, text in zip(_CRON_FIELDS, fields, strict=True)]
    days, months = matched[3], matched[4]
    # A day that no chosen month has (February 30th) never comes, unless days of the week
    # are chosen too: then either matching is enough, as in classic cron.
    if fields[5] in ("*", "?") and not any(
        day <= calendar.monthrange(2024, month)[1] for day in days for month in months
    ):
        raise _bad(spec, "no chosen month has any of the chosen days of the month")


def check_spec(spec: object) -> str:
    """``spec`` normalized (single spaces) if the server accepts it, else :class:`ConfigError`.

    The forms: a 6-field cron expression with seconds (``0 */5 * * * *``; names such as
    ``MON`` and ``JAN``; ``*``, ``?``, lists, ranges and steps), ``@yearly``/``@annually``,
    ``@monthly``, ``@weekly``, ``@daily``/``@midnight``, ``@hourly``, ``@every <duration>``
    (a Go duration of at least 1s, e.g. ``90s`` or ``1h30m``) and ``@at <RFC 3339 time>``
    (with a date, before 2262-04-12, the server's int64-nanosecond limit).
    """
    if not isinstance(spec, str):
        raise ConfigError(f"a schedule must be a str, not {shorten(spec)}")
    if len(spec) > MAX_KEY_LEN:  # a header value: keep it well under the limits
        raise _bad(spec, f"longer than {MAX_KEY_LEN} characters")
    fields = spec.split()
    if not fields:
        raise ConfigError("a schedule needs a cron expression or @every/@at/@hourly/… form")
    head, rest = fields[0], fields[1:]
    if head == "@at" and len(rest) == 1:
        _parse_at(spec, rest[0])
    elif head == "@every" and len(rest) == 1:
        _go_duration(spec, rest[0])
    elif head.startswith("@"):
        if head not in _MACROS or rest:
            raise _bad(
                spec, f"use a cron expression, @every <duration>, @at <time> or one of {_MACROS}"
            )
    else:
        _check_cron(spec, fields)
    return " ".join(fields)


def _rfc3339(value: object) -> str:
    when: dt.datetime = one_of("when", value, dt.datetime)
    if when.tzinfo is None or when.utcoffset() is None:
        raise ConfigError("schedule times must be timezone-aware datetimes")
    try:
        utc = when.astimezone(dt.UTC)
        # Round up to whole seconds: firing a little late is fine, early is not.
        seconds = math.ceil(utc.timestamp())
        at = dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (ValueError, OverflowError, OSError) as exc:
        raise ConfigError(f"schedule time {when!r} is out of range ({exc})") from None
    check_spec(f"@at {at}")
    return at


class Schedule:
    """A recurring schedule of one task; ``await cancel()`` removes it from the server."""

    def __init__(self, backend: TaskBackend, task_name: str, schedule_id: str, spec: str) -> None:
        self._backend = backend
        self.task_name = task_name
        self.id = schedule_id
        self.spec = spec

    @property
    def subject(self) -> str:
        """The subject holding this schedule."""
        return schedule_subject(self._backend.token(self.task_name), self.id)

    async def cancel(self) -> None:
        """Stop the schedule (purges its message; ticks already fired still run)."""
        with map_nats_errors(subject=self.subject):
            try:
                await self._backend.client.js.purge_stream(TASK_STREAM, subject=self.subject)
            except js_errors.NotFoundError:
                return


async def _publish_schedule(
    backend: TaskBackend,
    task_name: str,
    schedule_id: str,
    spec: str,
    *,
    payload: bytes,
    headers: dict[str, str],
    target: str | None = None,
) -> None:
    token = backend.token(task_name)
    subject = schedule_subject(token, schedule_id)
    hdrs = {
        **headers,
        _SCHEDULE: spec,
        _TARGET: target or request_subject(token),
        # The fired requests expire like any request; the schedule itself never does.
        H_SCHEDULE_TTL: await message_ttl(backend.client),
    }
    hdrs.pop(H_TTL, None)
    with map_nats_errors(subject=subject):
        await backend.client.js.publish(subject, payload, headers=hdrs)


async def submit_at(
    open_backend: Callable[[], Awaitable[TaskBackend]],
    task_name: str,
    when: dt.datetime,
    payload: bytes,
    *,
    task_id: str | None = None,
) -> tuple[TaskBackend, str]:
    """Create the state of a call of task ``task_name`` (encoded arguments ``payload``) now
    (``PENDING``) and have the server request it at ``when``; returns the backend (from
    ``open_backend()``, called once everything is checked) and the task id.

    The schedule message is the task's ``scheduled`` event; the request the server
    publishes (``task.requested.<token>.<id>``, carrying the state) its ``requested`` event.
    """
    at = _rfc3339(when)
    task_id = validate_name(task_id, "task id") if task_id is not None else uuid.uuid4().hex
    backend = await open_backend()
    data, ref = await backend.payloads.put(f"{task_id}.args", payload)
    state = new_state(task_id, task_name, data, ref)
    revision = await backend.store.create(state)
    if revision:
        target, body, headers = backend.requests.message(state, f"{task_id}-at", revision)
        await _publish_schedule(
            backend,
            task_name,
            task_id,
            f"@at {at}",
            payload=body,
            headers=headers,
            target=target,
        )
    return backend, task_id


async def schedule_cron(
    open_backend: Callable[[], Awaitable[TaskBackend]],
    task_name: str,
    schedule_id: str,
    spec: str,
    payload: bytes,
) -> Schedule:
    """Create or replace the recurring schedule ``schedule_id`` of task ``task_name``, each
    tick a call with the encoded arguments ``payload``.

    ``schedule_id`` and ``spec`` (see :func:`check_spec`) are checked before any I/O
    (``open_backend()`` is called after them). A
    replacement is one publish on the schedule's subject, which the server keeps one
    schedule per: the old definition runs until the new one is stored, and stays when the
    new one is refused.
    """
    # One subject token (task.schedule.<token>.<id>), also the prefix of the ids of its runs.
    check_name("schedule id", schedule_id)
    spec = check_spec(spec)
    backend = await open_backend()
    if len(payload) > backend.artifacts.inline_limit(backend.artifact_threshold):
        raise ConfigError("arguments of a recurring schedule must be small (no artifacts)")
    schedule = Schedule(backend, task_name, schedule_id, spec)
    await _publish_schedule(
        backend, task_name, schedule_id, spec, payload=payload, headers={H_SCHEDULE_ID: schedule_id}
    )
    return schedule
