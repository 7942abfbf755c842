"""Names of the streams, buckets, subjects and headers of the tasks layer; stream setup.

One stream, ``JSFLOW_TASKS``, captures ``task.>``: requests (``task.requested.<name>.<id>``,
consumed by one durable pull consumer per task name filtering ``task.requested.<name>`` and
``task.requested.<name>.>``), lifecycle events (``task.<kind>.<name>.<id>``) and schedules
(``task.schedule.<name>.<id>``, which the server turns into requests when due).

A request is also the task's ``requested`` event, and every event is published once: one
task's events replay with the filter ``task.*.*.<id>`` on that stream (the server indexes
subjects, so this reads only that task's messages), and a consumer of one kind of event
filters ``task.<kind>.<name>.>`` (or ``task.<kind>.>``).
"""

from __future__ import annotations

import asyncio
import re
import weakref
from typing import TYPE_CHECKING

import nats.js.errors
from nats.js import api

from jsflow.errors import ConfigError, map_nats_errors
from jsflow.observability import get_logger

if TYPE_CHECKING:
    from jsflow.client import Client

__all__ = [
    "CANCEL_PREFIX",
    "DEFAULT_REQUEST_MAX_AGE",
    "STATE_BUCKET",
    "TASK_STREAM",
    "ensure_streams",
    "event_subject",
    "request_filters",
    "request_subject",
    "schedule_subject",
    "task_filter",
    "validate_name",
]

TASK_STREAM = "JSFLOW_TASKS"
STATE_BUCKET = "jsflow_tasks"
ARTIFACT_BUCKET = "jsflow_artifacts"
CANCEL_PREFIX = "jsflow.task_cancel."

# How long the task stream keeps a message (requests, events, schedules) when it creates it.
DEFAULT_REQUEST_MAX_AGE = 7 * 24 * 3600.0

H_TASK_ID = "Jsflow-Task-Id"
H_TASK_NAME = "Jsflow-Task-Name"
H_EVENT = "Jsflow-Event"
H_ARGS_REF = "Jsflow-Args-Ref"
H_SCHEDULE_ID = "Jsflow-Schedule-Id"
# On a request whose body is the task's TaskState as written at this KV revision.
H_STATE_REVISION = "Jsflow-State-Revision"
H_MSG_ID = "Nats-Msg-Id"

_log = get_logger(__name__)
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{1,200}$")
_ready: weakref.WeakKeyDictionary[Client, asyncio.Future[None]] = weakref.WeakKeyDictionary()


def validate_name(value: str, what: str = "task name") -> str:
    """Return ``value`` if it is one subject token of ``A-Z a-z 0-9 _ -``, else ConfigError."""
    if not isinstance(value, str) or not _TOKEN.match(value):
        raise ConfigError(f"invalid {what} {value!r}: use 1-200 of A-Z a-z 0-9 _ -")
    return value


def request_subject(name: str, task_id: str | None = None) -> str:
    """Subject a request for task ``name`` is published on (``task.requested.<name>.<id>``).

    Without ``task_id``, the bare ``task.requested.<name>`` that other producers and cron
    schedules publish on; workers consume both.
    """
    return f"task.requested.{name}" if task_id is None else f"task.requested.{name}.{task_id}"


def request_filters(name: str) -> list[str]:
    """The filter subjects of the durable consumer of task ``name``'s requests."""
    return [request_subject(name), request_subject(name) + ".>"]


def event_subject(kind: str, name: str, task_id: str) -> str:
    """Subject of the lifecycle event ``kind`` of task ``task_id`` of task ``name``."""
    return f"task.{kind}.{name}.{task_id}"


def task_filter(task_id: str) -> str:
    """Filter subject matching every event of one task (requests included)."""
    return f"task.*.*.{task_id}"


def schedule_subject(name: str, schedule_id: str) -> str:
    """Subject holding the server-side schedule ``schedule_id`` for task ``name``."""
    return f"task.schedule.{name}.{schedule_id}"


def check_max_age(max_age: float | None) -> float | None:
    """``max_age`` in seconds (a positive finite number, or ``None``: keep as configured)."""
    if max_age is None:
        return None
    if (
        isinstance(max_age, bool)
        or not isinstance(max_age, int | float)
        or not (1.0 <= max_age < float("inf"))
    ):
        raise ConfigError(f"request_max_age must be at least 1 second, got {max_age!r}")
    return float(max_age)


async def _create(client: Client, max_age: float | None) -> None:
    js = client.js
    config = api.StreamConfig(
        name=TASK_STREAM,
        subjects=["task.>"],
        storage=api.StorageType.FILE,
        max_age=DEFAULT_REQUEST_MAX_AGE if max_age is None else max_age,
        duplicate_window=120.0,
        allow_atomic=True,
        allow_msg_schedules=True,
    )
    with map_nats_errors(subject=TASK_STREAM):
        try:
            info = await js.stream_info(TASK_STREAM)
        except nats.js.errors.NotFoundError:
            try:
                await js.add_stream(config)
            except nats.js.errors.BadRequestError as exc:
                if exc.err_code != 10058:  # created concurrently
                    raise
            return
        current = info.config.max_age
        if max_age is not None and (current is None or abs(current - max_age) > 1e-3):
            # Asked for explicitly: apply it to the existing stream (the rest stays as is).
            info.config.max_age = max_age
            await js.update_stream(info.config)
            _log.info("tasks.stream_max_age_updated", stream=TASK_STREAM, max_age=max_age)


async def ensure_streams(client: Client, *, max_age: float | None = None) -> None:
    """Create the tasks layer's streams once per client (idempotent, concurrency-safe).

    ``max_age`` (seconds) is how long the task stream keeps requests and events: the
    default, ``None``, creates it with 7 days and leaves an existing stream as it is; a
    number is set on the stream, created or existing (the first call per client decides).
    """
    max_age = check_max_age(max_age)
    future = _ready.get(client)
    if future is None or (future.done() and future.exception() is not None):
        future = asyncio.get_running_loop().create_future()
        _ready[client] = future
        try:
            await _create(client, max_age)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved
            _ready.pop(client, None)
            raise
        future.set_result(None)
        return
    await asyncio.shield(future)
