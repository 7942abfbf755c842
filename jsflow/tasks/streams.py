"""Names of the streams, buckets, subjects and headers of the tasks layer; stream setup.

One stream, ``JSFLOW_TASKS``, captures ``task.>``: requests (``task.requested.<name>.<id>``,
consumed by one durable pull consumer per task name filtering ``task.requested.<name>`` and
``task.requested.<name>.>``), lifecycle events (``task.<kind>.<name>.<id>``) and schedules
(``task.schedule.<name>.<id>``, which the server turns into requests when due).

A request is also the task's ``requested`` event, and every event is published once: one
task's events replay with the filter ``task.*.*.<id>`` on that stream (the server indexes
subjects, so this reads only that task's messages), and a consumer of one kind of event
filters ``task.<kind>.<name>.>`` (or ``task.<kind>.>``).

Retention: the stream has no stream-wide ``max_age``, because a recurring schedule is a
message of this stream and must live until it is cancelled (the server cannot target a
subject of another stream). Instead every request and event carries a per-message TTL
(``Nats-TTL``) of the configured request max age, which the stream records in its metadata
(``jsflow.request_max_age``) so every process uses the same one; a schedule carries no TTL
and gives the requests it fires that TTL (``Nats-Schedule-TTL``). A one-shot ``@at``
schedule is removed by the server once it fired. A stream created by an older jsflow with a
``max_age`` is migrated (no ``max_age``, that age as the TTL) when first opened.
Producers outside jsflow that publish on ``task.requested.<name>`` should set ``Nats-TTL``
too: a message without one is kept until it is purged.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from jsflow._js import api, headers, map_nats_errors, streams
from jsflow._validate import check_name, duration, one_of
from jsflow.connection import check_replicas
from jsflow.errors import ConfigError
from jsflow.observability import get_logger

if TYPE_CHECKING:
    from jsflow.client import Client

__all__ = [
    "CANCEL_PREFIX",
    "DEFAULT_APP",
    "DEFAULT_REQUEST_MAX_AGE",
    "MAX_APP_NAME",
    "STATE_BUCKET",
    "TASK_STREAM",
    "app_scope",
    "cancel_subject",
    "ensure_streams",
    "event_subject",
    "message_ttl",
    "request_filters",
    "request_subject",
    "schedule_subject",
    "split_token",
    "state_bucket",
    "task_filter",
    "task_token",
    "validate_name",
]

TASK_STREAM = "JSFLOW_TASKS"
STATE_BUCKET = "jsflow_tasks"
ARTIFACT_BUCKET = "jsflow_artifacts"
CANCEL_PREFIX = "jsflow.task_cancel."
# The app whose tasks keep the unqualified names (subjects, durables, state bucket).
DEFAULT_APP = "default"
# An isolated app's name is part of its state bucket's name (``jsflow_tasks_<app>``).
MAX_APP_NAME = 64
_APP_SEPARATOR = "~"  # in no app or task name: ``<app>~<name>`` is never ambiguous

# How long requests and events are kept (their per-message TTL) unless configured otherwise.
DEFAULT_REQUEST_MAX_AGE = 7 * 24 * 3600.0
# Stream metadata key recording the configured request max age (seconds, decimal).
MAX_AGE_METADATA = "jsflow.request_max_age"
_DUPLICATE_WINDOW = 120.0

H_TASK_ID = "Jsflow-Task-Id"
H_TASK_NAME = "Jsflow-Task-Name"
H_EVENT = "Jsflow-Event"
H_ARGS_REF = "Jsflow-Args-Ref"
H_SCHEDULE_ID = "Jsflow-Schedule-Id"
# On a request whose body is the task's TaskState as written at this KV revision.
H_STATE_REVISION = "Jsflow-State-Revision"
H_MSG_ID = "Nats-Msg-Id"
H_TTL = "Nats-TTL"
H_SCHEDULE_TTL = "Nats-Schedule-TTL"

_log = get_logger(__name__)


class _Setup:
    """Per connection: the stream setup, resolving to the ``Nats-TTL`` value of requests
    and events (``None`` until started, or after it failed)."""

    def __init__(self) -> None:
        self.future: asyncio.Future[str] | None = None


def validate_name(value: str, what: str = "task name") -> str:
    """Return ``value`` if it is a legal name (:func:`jsflow._validate.check_name`: 1-128 of
    ``A-Z a-z 0-9 _ -``), else :class:`InvalidNameError` (a ``ConfigError``)."""
    return check_name(what, value)


def task_token(app: str, name: str) -> str:
    """The subject token naming task ``name`` of app ``app``: the bare name for the default
    app (today's subjects), ``<app>~<name>`` for an isolated app. Pass it as ``name`` to
    :func:`request_subject`, :func:`request_filters`, :func:`event_subject` and
    :func:`schedule_subject`; ``~`` is in no app or task name, so two apps' tokens differ."""
    return name if app == DEFAULT_APP else f"{app}{_APP_SEPARATOR}{name}"


def app_scope(name: str, isolated: bool | None = None) -> str:
    """The namespace of app ``name``'s subjects, durables and state: its name (at most
    :data:`MAX_APP_NAME` characters), or :data:`DEFAULT_APP` for the default app and for an
    app created with ``isolated=False`` (which shares the unqualified names)."""
    one_of("isolated", isolated, (bool, type(None)))
    if isolated is False or name == DEFAULT_APP:
        validate_name(name, "app name")
        return DEFAULT_APP
    return check_name("app name", name, max_len=MAX_APP_NAME)


def split_token(token: str) -> tuple[str, str]:
    """``(app, name)`` of a subject token made by :func:`task_token`."""
    app, sep, name = token.rpartition(_APP_SEPARATOR)
    return (app, name) if sep else (DEFAULT_APP, token)


def cancel_subject(app: str, task_id: str | None = None) -> str:
    """Core subject telling workers of ``app`` to interrupt task ``task_id`` (``None``: the
    wildcard a worker subscribes to; ``>`` because an id may hold dots)."""
    return f"{CANCEL_PREFIX}{app}.{'>' if task_id is None else task_id}"


def state_bucket(app: str) -> str:
    """The KV bucket holding the task states of app ``app`` (``jsflow_tasks`` for the
    default app, ``jsflow_tasks_<app>`` for an isolated one)."""
    return STATE_BUCKET if app == DEFAULT_APP else f"{STATE_BUCKET}_{app}"


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


def task_filter(task_id: str, token: str = "*") -> str:
    """Filter subject matching every event of one task (requests included); ``token``
    (see :func:`task_token`) narrows it to one app's task of that name."""
    return f"task.*.{token}.{task_id}"


def schedule_subject(name: str, schedule_id: str) -> str:
    """Subject holding the server-side schedule ``schedule_id`` for task ``name``."""
    return f"task.schedule.{name}.{schedule_id}"


def check_max_age(max_age: float | None) -> float | None:
    """``max_age`` in seconds (a positive finite number, or ``None``: keep as configured)."""
    if max_age is None:
        return None
    return duration("request_max_age", max_age, minimum=1.0, positive=False)


def _recorded_max_age(config: api.StreamConfig) -> float | None:
    """The request max age an existing stream records: its metadata, else (a stream made
    by an older jsflow) its stream-wide ``max_age``."""
    raw = (config.metadata or {}).get(MAX_AGE_METADATA)
    if raw is not None:
        try:
            return check_max_age(float(raw))
        except (ValueError, ConfigError):
            _log.warning("tasks.stream_metadata_invalid", stream=TASK_STREAM, value=raw)
    if config.max_age:
        return float(config.max_age)
    return None


async def _create(client: Client, max_age: float | None, replicas: int | None) -> float:
    """Create or migrate the task stream; returns the request max age in force."""
    js = client.js
    wanted = DEFAULT_REQUEST_MAX_AGE if max_age is None else max_age
    config = api.StreamConfig(
        num_replicas=check_replicas(replicas, client.replicas),
        name=TASK_STREAM,
        subjects=["task.>"],
        storage=api.StorageType.FILE,
        max_age=0.0,  # per-message TTLs instead: a schedule must not age out
        duplicate_window=_DUPLICATE_WINDOW,
        allow_atomic=True,
        allow_msg_schedules=True,
        allow_msg_ttl=True,
        # Event followers replay by direct get (any replica answers; no consumer each).
        allow_direct=True,
        metadata={MAX_AGE_METADATA: repr(wanted)},
    )
    info, created = await streams.create_or_bind(js, config, timeout=client.timeout)
    if created:
        return wanted
    with map_nats_errors(subject=TASK_STREAM):
        current = info.config
        recorded = _recorded_max_age(current)
        effective = max_age if max_age is not None else (recorded or DEFAULT_REQUEST_MAX_AGE)
        legacy = bool(current.max_age) or not current.allow_msg_ttl or not current.allow_direct
        if legacy or recorded is None or abs(recorded - effective) > 1e-3:
            # Explicitly asked for, or a stream without per-message TTLs: bring it to the
            # current layout (the rest of its configuration stays as it is).
            current.max_age = 0.0
            current.allow_msg_ttl = True
            current.allow_direct = True
            current.metadata = {**(current.metadata or {}), MAX_AGE_METADATA: repr(effective)}
            await js.update_stream(current)
            _log.info(
                "tasks.stream_updated",
                stream=TASK_STREAM,
                request_max_age=effective,
                migrated=legacy,
            )
        return effective


async def ensure_streams(
    client: Client, *, max_age: float | None = None, replicas: int | None = None
) -> str:
    """Create the tasks layer's streams once per client (idempotent, concurrency-safe).

    ``replicas`` (1-5, default the client's) applies when the stream is created; an
    existing stream keeps its own.

    ``max_age`` (seconds) is how long requests and events are kept (their per-message
    TTL): the default, ``None``, uses what the stream records (7 days for a new stream); a
    number is recorded on the stream, created or existing (the first call per client
    decides). A stream of an older jsflow, with a stream-wide ``max_age``, is migrated.
    Returns the ``Nats-TTL`` value this client gives requests and events.
    """
    max_age = check_max_age(max_age)
    setup = client.shared(_Setup, _Setup)
    future = setup.future
    if future is None or (future.done() and future.exception() is not None):
        future = setup.future = asyncio.get_running_loop().create_future()
        try:
            ttl = headers.ttl_value(await _create(client, max_age, replicas))
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved
            setup.future = None
            raise
        future.set_result(ttl)
        return ttl
    return await asyncio.shield(future)


async def message_ttl(client: Client) -> str:
    """The ``Nats-TTL`` value of requests and events published through ``client``
    (sets the streams up on first use)."""
    future = client.shared(_Setup, _Setup).future
    if future is not None and future.done() and future.exception() is None:
        return future.result()
    return await ensure_streams(client)
