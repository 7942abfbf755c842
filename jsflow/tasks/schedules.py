"""Run tasks later or repeatedly with the server's message schedules (NATS 2.12+).

A schedule is a message on ``task.schedule.<name>.<id>`` carrying ``Nats-Schedule``
(``@at <RFC 3339>``, a cron expression or ``@every <duration>``) and
``Nats-Schedule-Target: task.requested.<name>``; the server publishes the body to the target
when due, once per tick, so it fires once however many workers run.

A schedule message has no TTL (the task stream has no stream-wide max age either), so a
recurring schedule lives until cancelled and an ``@at`` one until it fired (the server then
removes it); the requests it fires expire after the request max age (``Nats-Schedule-TTL``).
"""

from __future__ import annotations

import datetime as dt
import math
import uuid
from typing import TYPE_CHECKING, Any

from jsflow._js import js_errors, map_nats_errors
from jsflow.errors import ConfigError
from jsflow.tasks.backend import TaskBackend, new_state
from jsflow.tasks.handle import TaskHandle
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

if TYPE_CHECKING:
    from jsflow.tasks.app import TaskFunction

__all__ = ["Schedule", "schedule_cron", "submit_at"]

_SCHEDULE = "Nats-Schedule"
_TARGET = "Nats-Schedule-Target"


def _rfc3339(when: dt.datetime) -> str:
    if when.tzinfo is None:
        raise ConfigError("schedule times must be timezone-aware datetimes")
    utc = when.astimezone(dt.UTC)
    # Round up to whole seconds: firing a little late is fine, early is not.
    seconds = math.ceil(utc.timestamp())
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


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
        return schedule_subject(self.task_name, self.id)

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
    subject = schedule_subject(task_name, schedule_id)
    hdrs = {
        **headers,
        _SCHEDULE: spec,
        _TARGET: target or request_subject(task_name),
        # The fired requests expire like any request; the schedule itself never does.
        H_SCHEDULE_TTL: await message_ttl(backend.client),
    }
    hdrs.pop(H_TTL, None)
    with map_nats_errors(subject=subject):
        await backend.client.js.publish(subject, payload, headers=hdrs)


async def submit_at(
    fn: TaskFunction[Any, Any],
    when: dt.datetime,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    *,
    task_id: str | None = None,
) -> TaskHandle[Any]:
    """Create the task's state now (``PENDING``) and have the server request it at ``when``.

    The schedule message is the task's ``scheduled`` event; the request the server
    publishes (``task.requested.<name>.<id>``, carrying the state) its ``requested`` event.
    """
    at = _rfc3339(when)
    task_id = validate_name(task_id, "task id") if task_id else uuid.uuid4().hex
    payload = fn.codec.encode_args(args, kwargs)
    backend = await fn.app.backend()
    data, ref = await backend.externalize(f"{task_id}.args", payload)
    state = new_state(task_id, fn.name, data, ref)
    revision = await backend.store.create(state)
    if revision:
        target, body, headers = backend.request_message(state, f"{task_id}-at", revision)
        await _publish_schedule(
            backend,
            fn.name,
            task_id,
            f"@at {at}",
            payload=body,
            headers=headers,
            target=target,
        )
    return TaskHandle(backend, task_id, fn.name, fn.codec)


async def schedule_cron(
    fn: TaskFunction[Any, Any],
    schedule_id: str,
    spec: str,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Schedule:
    """Create or replace the recurring schedule ``schedule_id`` of ``fn``."""
    validate_name(schedule_id, "schedule id")
    spec = spec.strip()
    if not spec:
        raise ConfigError("a schedule needs a cron expression or @every/@hourly/… form")
    payload = fn.codec.encode_args(args, kwargs)
    backend = await fn.app.backend()
    if len(payload) > backend.artifact_threshold:
        raise ConfigError("arguments of a recurring schedule must be small (no artifacts)")
    schedule = Schedule(backend, fn.name, schedule_id, spec)
    await schedule.cancel()  # replace an older definition
    await _publish_schedule(
        backend, fn.name, schedule_id, spec, payload=payload, headers={H_SCHEDULE_ID: schedule_id}
    )
    return schedule
