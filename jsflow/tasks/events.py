"""Task lifecycle events on ``task.<kind>.<name>.<id>``, replayable per task."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any

from jsflow._js import Msg, api, map_nats_errors, nats_errors
from jsflow._proto import task_pb2
from jsflow.errors import CodecError, RequestTimeoutError
from jsflow.tasks.streams import (
    H_EVENT,
    H_TASK_ID,
    H_TASK_NAME,
    H_TTL,
    TASK_STREAM,
    event_subject,
    message_ttl,
    task_filter,
)

if TYPE_CHECKING:
    from jsflow.client import Client

__all__ = [
    "TERMINAL_EVENTS",
    "PendingPublish",
    "TaskEvent",
    "TaskEvents",
    "event_from_msg",
    "publish_async",
    "publish_event",
    "start_event",
    "wait_all",
]

TERMINAL_EVENTS = frozenset({"completed", "failed", "cancelled", "dead"})


@dataclass(frozen=True, slots=True)
class TaskEvent:
    """One lifecycle event of a task.

    ``kind`` is one of ``scheduled requested started progress retrying completed failed
    cancelled dead``; ``progress`` (0-100) and ``message`` are set by progress reports.
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

    __slots__ = ("_future", "_timeout", "subject")

    def __init__(self, future: asyncio.Future[Any], subject: str, timeout: float) -> None:
        self._future = future
        self._timeout = timeout
        self.subject = subject
        # An abandoned publish (its owner cancelled) must not log "exception never retrieved".
        future.add_done_callback(_retrieve)

    async def wait(self) -> None:
        """Wait for the ack (:class:`RequestTimeoutError` after the client's timeout)."""
        with map_nats_errors(subject=self.subject):
            async with asyncio.timeout(self._timeout):
                await self._future


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


async def publish_async(
    client: Client, subject: str, data: bytes, headers: dict[str, str] | None = None
) -> PendingPublish:
    """Send one JetStream publish now and return a handle on its ack."""
    with map_nats_errors(subject=subject):
        future = await client.js.publish_async(
            subject, data, headers=headers, wait_stall=client.timeout
        )
    return PendingPublish(future, subject, client.timeout)


async def wait_all(pending: list[PendingPublish]) -> None:
    """Await the acks of ``pending`` (all of them, raising the first failure)."""
    if len(pending) == 1:
        await pending[0].wait()
    elif pending:
        results = await asyncio.gather(*(p.wait() for p in pending), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result


def _event_message(event: TaskEvent, ttl: str) -> tuple[str, bytes, dict[str, str]]:
    headers = {H_TASK_ID: event.task_id, H_TASK_NAME: event.name, H_EVENT: event.kind, H_TTL: ttl}
    return event_subject(event.kind, event.name, event.task_id), event.to_bytes(), headers


async def start_event(client: Client, event: TaskEvent) -> PendingPublish:
    """Publish ``event`` on ``task.<kind>.<name>.<id>`` without waiting for the ack.

    It expires after the request max age (``Nats-TTL``, see :func:`ensure_streams`)."""
    subject, data, headers = _event_message(event, await message_ttl(client))
    return await publish_async(client, subject, data, headers)


async def publish_event(client: Client, event: TaskEvent) -> None:
    """Publish ``event`` on ``task.<kind>.<name>.<id>`` and wait until it is stored."""
    await (await start_event(client, event)).wait()


def event_from_msg(msg: Msg) -> TaskEvent | None:
    """The event a message of the tasks stream stands for (``None``: not an event).

    A request (``task.requested.<name>.<id>``) is its task's ``requested`` event; a
    one-shot schedule (``task.schedule.<name>.<id>``) is its ``scheduled`` event.
    """
    parts = msg.subject.split(".")
    if len(parts) != 4:
        return None
    kind, name, task_id = parts[1], parts[2], parts[3]
    headers = msg.headers or {}
    if kind in ("requested", "schedule"):
        if headers.get(H_TASK_ID, task_id) != task_id:
            return None  # a cron schedule that happens to share the id: not this task's
        try:
            stamp = msg.metadata.timestamp.timestamp()
        except Exception:
            stamp = 0.0
        if kind == "schedule":
            spec = headers.get("Nats-Schedule", "")
            return TaskEvent(task_id, name, "scheduled", message=spec, time=stamp)
        return TaskEvent(task_id, name, "requested", time=stamp)
    return TaskEvent.from_bytes(msg.data)


class TaskEvents:
    """Async iterator over one task's events from its start, ending after a terminal event.

    Each iterator is one ordered consumer on the tasks stream filtered to this task's
    subjects (``task.*.*.<id>``), per explicit caller, not per waiter; it is removed when
    iteration ends or on ``aclose()``.
    """

    def __init__(self, client: Client, task_id: str, idle_timeout: float | None = None) -> None:
        self._client = client
        self.task_id = task_id
        self._idle_timeout = idle_timeout
        self._sub: Any = None
        self._done = False

    async def _start(self) -> None:
        if self._sub is None:
            subject = task_filter(self.task_id)
            with map_nats_errors(subject=subject):
                self._sub = await self._client.js.subscribe(
                    subject,
                    stream=TASK_STREAM,
                    ordered_consumer=True,
                    deliver_policy=api.DeliverPolicy.ALL,
                    inactive_threshold=60.0,
                )

    def __aiter__(self) -> TaskEvents:
        return self

    async def __anext__(self) -> TaskEvent:
        if self._done:
            raise StopAsyncIteration
        await self._start()
        event = None
        while event is None:
            try:
                msg = await self._sub.next_msg(timeout=self._idle_timeout)
            except nats_errors.TimeoutError as exc:
                raise RequestTimeoutError(
                    f"no event of task {self.task_id} within {self._idle_timeout}s"
                ) from exc
            event = event_from_msg(msg)
        if event.terminal:
            await self.aclose()
            self._done = True
        return event

    async def aclose(self) -> None:
        """Stop iterating and remove the consumer."""
        self._done = True
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
            self._sub = None

    async def __aenter__(self) -> TaskEvents:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
