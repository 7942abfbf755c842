"""Task lifecycle events on ``task.<kind>.<name>.<id>``, replayable per task."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
import weakref
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any

from jsflow._js import (
    Msg,
    check_pub_ack,
    codes,
    js_errors,
    map_nats_errors,
    send_request,
    subscriptions,
)
from jsflow._proto import task_pb2
from jsflow._validate import check_id, count, optional_duration, shorten
from jsflow.errors import (
    CodecError,
    ConnectionClosedError,
    ConnectionFailedError,
    RequestTimeoutError,
    ServerError,
)
from jsflow.observability import get_logger, inject_context
from jsflow.tasks.streams import (
    DEFAULT_APP,
    H_EVENT,
    H_TASK_ID,
    H_TASK_NAME,
    H_TTL,
    TASK_STREAM,
    event_subject,
    message_ttl,
    split_token,
    task_filter,
    task_token,
)

if TYPE_CHECKING:
    from jsflow.client import Client

__all__ = [
    "TERMINAL_EVENTS",
    "PendingPublish",
    "TaskEvent",
    "TaskEvents",
    "event_from_msg",
    "event_stored",
    "publish_async",
    "publish_event",
    "start_event",
    "wait_all",
]

_log = get_logger(__name__)

TERMINAL_EVENTS = frozenset({"completed", "failed", "cancelled", "dead"})


@dataclass(frozen=True, slots=True)
class TaskEvent:
    """One lifecycle event of a task.

    ``kind`` is one of ``scheduled requested started progress retrying completed failed
    cancelled dead``; ``progress`` (0-100) and ``message`` are set by progress reports.
    ``seq`` is the event's sequence in the tasks stream when it was read from it (0 for an
    event not read from the stream): resume a follower after it with ``after_seq``.
    """

    task_id: str
    name: str
    kind: str
    attempt: int = 0
    progress: float = 0.0
    message: str = ""
    error_type: str = ""
    error_message: str = ""
    time: float = 0.0
    seq: int = 0

    @property
    def terminal(self) -> bool:
        """Whether this event ends the task's event log."""
        return self.kind in TERMINAL_EVENTS

    @classmethod
    def from_bytes(cls, data: bytes) -> TaskEvent:
        """Decode a ``TaskEvent`` protobuf."""
        msg = task_pb2.TaskEvent()
        try:
            msg.ParseFromString(data)
        except Exception as exc:
            raise CodecError(f"cannot decode task event: {exc}") from exc
        return cls(
            task_id=msg.task_id,
            name=msg.name,
            kind=msg.kind,
            attempt=msg.attempt,
            progress=msg.progress,
            message=msg.message,
            error_type=msg.error_type,
            error_message=msg.error_message,
            time=msg.time,
        )

    def to_bytes(self) -> bytes:
        """Encode as a ``TaskEvent`` protobuf."""
        msg = task_pb2.TaskEvent(
            task_id=self.task_id,
            name=self.name,
            kind=self.kind,
            attempt=self.attempt,
            progress=self.progress,
            message=self.message,
            error_type=self.error_type,
            error_message=self.error_message,
            time=self.time or time.time(),
        )
        return bytes(msg.SerializeToString())


class PendingPublish:
    """A JetStream publish sent without waiting; :meth:`wait` awaits the stream's ack.

    Several pending publishes travel back to back and their acks come back together, so
    a worker pays one round trip for all of them instead of one each.
    """

    __slots__ = ("_future", "subject")

    def __init__(self, future: asyncio.Future[Any], subject: str) -> None:
        self._future = future
        self.subject = subject
        # An abandoned publish (its owner cancelled) must not log "exception never retrieved".
        future.add_done_callback(_retrieve)

    async def wait(self) -> None:
        """Wait for the ack (:class:`RequestTimeoutError` after the client's timeout)."""
        future = self._future
        with map_nats_errors(subject=self.subject):
            # Done already in the usual case by the time a worker asks: no switch. The
            # request's own timer bounds the wait.
            check_pub_ack(future.result() if future.done() else await future)


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


async def publish_async(
    client: Client, subject: str, data: bytes, headers: dict[str, str] | None = None
) -> PendingPublish:
    """Send one JetStream publish now and return a handle on its ack."""
    with map_nats_errors(subject=subject):
        future = await send_request(
            client.nc, subject, data, timeout=client.timeout, headers=headers
        )
    return PendingPublish(future, subject)


async def wait_all(pending: list[PendingPublish]) -> None:
    """Await the acks of ``pending`` (all of them, raising the first failure)."""
    # One after another rather than gather(): the publishes are in flight together already,
    # so this costs no extra round trip, and no task per publish (most acks are in by now).
    first: BaseException | None = None
    for publish in pending:
        try:
            await publish.wait()
        except Exception as exc:
            first = first or exc
    if first is not None:
        raise first


def _event_message(event: TaskEvent, ttl: str, app: str) -> tuple[str, bytes, dict[str, str]]:
    headers = {H_TASK_ID: event.task_id, H_TASK_NAME: event.name, H_EVENT: event.kind, H_TTL: ttl}
    inject_context(headers)  # an event belongs to the trace of the attempt that published it
    subject = event_subject(event.kind, task_token(app, event.name), event.task_id)
    return subject, event.to_bytes(), headers


async def start_event(
    client: Client, event: TaskEvent, *, app: str = DEFAULT_APP
) -> PendingPublish:
    """Publish ``event`` of a task of ``app`` on ``task.<kind>.<token>.<id>`` (the token of
    :func:`task_token`) without waiting for the ack.

    It expires after the request max age (``Nats-TTL``, see :func:`ensure_streams`)."""
    subject, data, headers = _event_message(event, await message_ttl(client), app)
    return await publish_async(client, subject, data, headers)


async def publish_event(client: Client, event: TaskEvent, *, app: str = DEFAULT_APP) -> None:
    """Publish ``event`` of a task of ``app`` and wait until it is stored."""
    await (await start_event(client, event, app=app)).wait()


async def event_stored(client: Client, kind: str, token: str, task_id: str) -> bool:
    """Whether the stream holds an event ``kind`` of the task (``token``: :func:`task_token`).

    One get of the last message on that exact subject (the server indexes subjects)."""
    subject = event_subject(kind, token, task_id)
    with map_nats_errors(subject=subject):
        try:
            await client.js.get_msg(TASK_STREAM, subject=subject)
        except js_errors.NotFoundError as exc:
            if exc.err_code == codes.STREAM_NOT_FOUND:
                raise
            return False
    return True


def event_from_msg(msg: Msg) -> TaskEvent | None:
    """The event a message of the tasks stream stands for (``None``: not an event).

    A request (``task.requested.<name>.<id>``) is its task's ``requested`` event; a
    one-shot schedule (``task.schedule.<name>.<id>``) is its ``scheduled`` event.
    """
    try:
        stamp = msg.metadata.timestamp.timestamp()
    except Exception:
        stamp = 0.0
    return _event_of(msg.subject, msg.headers, msg.data, stamp)


def _event_of(
    subject: str, headers: dict[str, str] | None, data: bytes | None, stamp: float
) -> TaskEvent | None:
    parts = subject.split(".", 3)  # an id may hold dots: it is the whole rest
    if len(parts) != 4:
        return None
    kind, task_id = parts[1], parts[3]
    name = split_token(parts[2])[1]
    headers = headers or {}
    if kind in ("requested", "schedule"):
        if headers.get(H_TASK_ID, task_id) != task_id:
            return None  # a cron schedule that happens to share the id: not this task's
        if kind == "schedule":
            spec = headers.get("Nats-Schedule", "")
            return TaskEvent(task_id, name, "scheduled", message=spec, time=stamp)
        return TaskEvent(task_id, name, "requested", time=stamp)
    return TaskEvent.from_bytes(data or b"")


# Re-reads after a poke that found nothing new: the live copy of a message (core delivery)
# can overtake the stream's write of it, and a duplicate the stream dropped pokes too.
_RECHECKS = (0.002, 0.01, 0.05, 0.2, 1.0)
# A waiting follower re-reads the stream this often even without a poke, so a live message
# lost (a slow-consumer drop, a reconnect gap) delays it at most this long, never strands it.
_POLL = 15.0
# Every event, request and one-shot schedule of every task (an id may hold dots).
_LIVE_SUBJECT = "task.*.*.>"


class _EventHub:
    """Per client: the one core subscription that tells followers of task events that their
    task has something new.

    Followers never get a server-side consumer. Each reads its task's messages from the
    tasks stream itself, by (direct) get with ``next_by_subj`` from the last stream sequence
    it returned, so it sees them in stream order, each once, replay and live alike. The
    live subscription only *pokes* the followers of the task a message names; the stream
    stays the one source of truth (a duplicate publish the stream dropped, or one it
    refused, is never shown). Subscribed while it has followers; closed with the client.
    """

    def __init__(self, client: Client) -> None:
        # Weak: the registry's value must not keep its key (nor its connection, whose
        # callbacks refer to the client) alive. Followers hold the client while they run.
        self._client = weakref.ref(client)
        self._followers: dict[str, weakref.WeakSet[TaskEvents]] = {}
        self._sub = subscriptions.SharedSubscription(
            _LIVE_SUBJECT, self._on_msg, lambda: not self._followers and not self._closed
        )
        self._probing = asyncio.Lock()
        self._closed = False
        self.direct = False  # whether the stream serves direct gets (set on first join)
        self._probed = False

    @property
    def closed(self) -> bool:
        """Whether the client (or its connection) is closed for good."""
        client = self._client()
        return self._closed or client is None or bool(client.nc.is_closed)

    def _live_client(self) -> Client:
        client = self._client()
        if client is None:
            raise ConnectionClosedError("the client is gone")
        return client

    async def join(self, follower: TaskEvents) -> None:
        """Register ``follower``; returns once the live subscription is in place, so any
        message stored after this is either read or poked."""
        if self.closed:
            raise ConnectionClosedError("the client is closed")
        self._followers.setdefault(follower.task_id, weakref.WeakSet()).add(follower)
        try:
            client = self._live_client()
            if not self._probed:
                async with self._probing:
                    if not self._probed:
                        with map_nats_errors(subject=TASK_STREAM):
                            info = await client.js.stream_info(TASK_STREAM)
                        self.direct = bool(info.config.allow_direct)
                        self._probed = True
            if not self._sub.active and not self.closed:
                # The server has the interest before the first read: nothing stored after
                # that read can go unnoticed.
                await self._sub.ensure(client.nc, timeout=client.timeout)
        except BaseException:
            self.leave(follower)
            raise

    def leave(self, follower: TaskEvents) -> None:
        """Forget ``follower`` at once; the subscription goes when no follower is left."""
        group = self._followers.get(follower.task_id)
        if group is not None:
            group.discard(follower)
            if not group:
                del self._followers[follower.task_id]
        self._sub.release_when_idle()

    async def _on_msg(self, msg: Msg) -> None:
        parts = msg.subject.split(".", 3)
        if len(parts) != 4:
            return
        group = self._followers.get(parts[3])
        if group is None:
            return
        if not group:  # its followers were dropped without aclose()
            del self._followers[parts[3]]
            self._sub.release_when_idle()
            return
        for follower in group:
            follower._poke()

    def wake_all(self) -> None:
        """Make every follower re-read (after a reconnect: live messages may be lost)."""
        for group in list(self._followers.values()):
            for follower in list(group):
                follower._poke()

    async def aclose(self) -> None:
        """End every follower (:class:`ConnectionClosedError`) and drop the subscription."""
        self._closed = True
        # It stays registered (closed) for this client: a follower started later fails
        # at once instead of subscribing on a connection being drained.
        followers = [f for group in self._followers.values() for f in group]
        self._followers.clear()
        for follower in followers:
            follower._poke()
        await self._sub.close()


def _hub_for(client: Client) -> _EventHub:
    def make() -> _EventHub:
        hub = _EventHub(client)
        client.on_close(hub)
        client.on_reconnect(hub.wake_all)
        return hub

    return client.shared(_EventHub, make)


class TaskEvents:
    """Async iterator over one task's events from its start, ending after a terminal event.

    It costs the server nothing per follower: every follower on a client shares that
    client's one live subscription and reads its task's messages from the tasks stream by
    direct get (``next_by_subj`` on ``task.*.*.<id>``), in stream order, each exactly once
    across replay and live. ``aclose()`` (or leaving ``async with``) releases it at once.
    ``idle_timeout`` (seconds) raises :class:`RequestTimeoutError` when no event comes that
    long. Closing the client ends every follower with :class:`ConnectionClosedError` (not a
    silent stop: a follower that did not see the terminal event must be able to tell).
    A message on the task's subjects that does not decode is skipped (and logged).
    """

    def __init__(
        self,
        client: Client,
        task_id: str,
        idle_timeout: float | None = None,
        *,
        name: str = "",
        app: str = DEFAULT_APP,
        after_seq: int = 0,
    ) -> None:
        self.task_id = check_id("task id", task_id)
        self._idle_timeout = optional_duration("idle_timeout", idle_timeout)
        self._client = client
        self._app = app
        # Known name: the server reads only this app's task. Unknown: every task of that id,
        # and messages of other apps' tasks with the same id are skipped.
        self._filter = task_filter(self.task_id, task_token(app, name) if name else "*")
        self._hub: _EventHub | None = None
        # Resuming (an SSE client's Last-Event-ID): only events stored after this sequence.
        self._last_seq = count("after_seq", after_seq, minimum=0, maximum=2**63 - 1)
        self._wake = asyncio.Event()
        self._done = False

    def _poke(self) -> None:
        self._wake.set()

    def __aiter__(self) -> TaskEvents:
        return self

    async def __anext__(self) -> TaskEvent:
        if self._done:
            raise StopAsyncIteration
        hub = self._hub
        if hub is None:
            hub = _hub_for(self._client)
            await hub.join(self)
            self._hub = hub
            if self._last_seq and await self._resumed_after_end(hub):
                self._release()
                raise StopAsyncIteration
        deadline = None if self._idle_timeout is None else time.monotonic() + self._idle_timeout
        rechecks = len(_RECHECKS)  # none until a poke finds nothing
        while True:
            if self._done:
                raise StopAsyncIteration
            if hub.closed:
                self._release()
                raise ConnectionClosedError(
                    f"the client was closed while following task {shorten(self.task_id)}"
                )
            self._wake.clear()  # before the read: a poke during it makes us read again
            try:
                advanced, event = await self._read(hub)
            except (ConnectionFailedError, RequestTimeoutError) as exc:
                if hub.closed:
                    self._release()
                    raise ConnectionClosedError(
                        f"the client was closed while following task {shorten(self.task_id)}"
                    ) from exc
                # Disconnected or slow for now: the stream keeps the events; read again
                # soon (bounded by idle_timeout; a connection closed for good ends it).
                _log.debug("tasks.event_read_failed", task_id=self.task_id, error=str(exc))
                advanced, event = False, None
                rechecks = len(_RECHECKS) - 1  # retry after the longest recheck pause
            if event is not None:
                if event.terminal:
                    self._release()
                return event
            if advanced:
                continue  # a message that is not one of this task's events: read on
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise RequestTimeoutError(
                    f"no event of task {shorten(self.task_id)} within {self._idle_timeout}s"
                )
            if rechecks < len(_RECHECKS):
                pause = _RECHECKS[rechecks]
                rechecks += 1
                await asyncio.sleep(pause if remaining is None else min(pause, remaining))
                continue
            wait = _POLL if remaining is None else min(_POLL, remaining)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._wake.wait()
                rechecks = 0  # poked: the message may not be stored yet

    async def _read(self, hub: _EventHub) -> tuple[bool, TaskEvent | None]:
        """The next stored message after the last one read: ``(False, None)`` when there is
        none yet, ``(True, event or None)`` when there was one (``None``: not an event)."""
        with map_nats_errors(subject=self._filter):
            try:
                raw = await self._client.js.get_msg(
                    TASK_STREAM,
                    seq=self._last_seq + 1,
                    subject=self._filter,
                    next=True,
                    direct=hub.direct,
                )
            except js_errors.NotFoundError as exc:
                if exc.err_code == codes.STREAM_NOT_FOUND:
                    raise
                return False, None
        seq = int(raw.seq or 0)
        if seq <= self._last_seq:  # cannot happen with a sane server; never loop on it
            raise ServerError(f"stream {TASK_STREAM} returned sequence {seq} again")
        self._last_seq = seq
        stamp = raw.time.timestamp() if raw.time is not None else 0.0
        subject = raw.subject or ""
        parts = subject.split(".", 3)
        if len(parts) != 4 or split_token(parts[2])[0] != self._app:
            return True, None  # another app's task with the same id
        try:
            event = _event_of(subject, raw.headers, raw.data, stamp)
            return True, None if event is None else dataclasses.replace(event, seq=seq)
        except CodecError as exc:
            _log.warning(
                "tasks.event_undecodable",
                task_id=self.task_id,
                subject=shorten(raw.subject),
                seq=seq,
                error=str(exc),
            )
            return True, None

    async def _resumed_after_end(self, hub: _EventHub) -> bool:
        """Whether the message this follower resumes after is its task's terminal event (a
        client that saw the end reconnected): then there is nothing more to wait for."""
        with map_nats_errors(subject=self._filter):
            try:
                raw = await self._client.js.get_msg(
                    TASK_STREAM, seq=self._last_seq, direct=hub.direct
                )
            except js_errors.NotFoundError as exc:
                if exc.err_code == codes.STREAM_NOT_FOUND:
                    raise
                return False  # expired or never there: read on from it
        subject = raw.subject or ""
        parts = subject.split(".", 3)
        if len(parts) != 4 or parts[3] != self.task_id or parts[1] not in TERMINAL_EVENTS:
            return False
        return split_token(parts[2])[0] == self._app

    def _release(self) -> None:
        self._done = True
        hub, self._hub = self._hub, None
        if hub is not None:
            hub.leave(self)
        self._wake.set()  # a concurrent __anext__ sees it is done

    async def aclose(self) -> None:
        """Stop iterating and release this follower's registration at once."""
        self._release()

    async def __aenter__(self) -> TaskEvents:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
