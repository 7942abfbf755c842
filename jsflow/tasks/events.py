"""Task lifecycle events: ``task.<kind>.<name>`` plus each task's own replayable log."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any

import nats.errors
from nats.js import api

from jsflow._proto import task_pb2
from jsflow.errors import CodecError, RequestTimeoutError, map_nats_errors
from jsflow.tasks.streams import (
    EVENT_STREAM,
    H_EVENT,
    H_TASK_ID,
    H_TASK_NAME,
    event_subject,
    log_subject,
)

if TYPE_CHECKING:
    from jsflow.client import Client

__all__ = ["TERMINAL_EVENTS", "TaskEvent", "TaskEvents", "publish_event"]

TERMINAL_EVENTS = frozenset({"completed", "failed", "cancelled", "dead"})


@dataclass(frozen=True, slots=True)
class TaskEvent:
    """One lifecycle event of a task.

    ``kind`` is one of ``requested started progress retrying completed failed cancelled
    dead``; ``progress`` (0-100) and ``message`` are set by progress reports.
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


async def publish_event(
    client: Client, event: TaskEvent, *, log_only: bool = False, msg_id: str | None = None
) -> None:
    """Publish ``event`` on ``task.<kind>.<name>`` and on the task's own log subject.

    ``msg_id`` deduplicates a republished event (e.g. a redelivered router expansion).
    """
    data = event.to_bytes()
    headers = {H_TASK_ID: event.task_id, H_TASK_NAME: event.name, H_EVENT: event.kind}
    if msg_id is not None:
        headers["Nats-Msg-Id"] = msg_id
    js = client.js
    subjects = [log_subject(event.task_id)]
    if not log_only:
        subjects.append(event_subject(event.kind, event.name))
    with map_nats_errors(subject=subjects[0]):
        await asyncio.gather(*(js.publish(s, data, headers=headers) for s in subjects))


class TaskEvents:
    """Async iterator over one task's events from its start, ending after a terminal event.

    Each iterator is one ordered consumer on the task's own subject (per explicit caller,
    not per waiter); it is removed when iteration ends or on ``aclose()``.
    """

    def __init__(self, client: Client, task_id: str, idle_timeout: float | None = None) -> None:
        self._client = client
        self.task_id = task_id
        self._idle_timeout = idle_timeout
        self._sub: Any = None
        self._done = False

    async def _start(self) -> None:
        if self._sub is None:
            subject = log_subject(self.task_id)
            with map_nats_errors(subject=subject):
                self._sub = await self._client.js.subscribe(
                    subject,
                    stream=EVENT_STREAM,
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
        try:
            msg = await self._sub.next_msg(timeout=self._idle_timeout)
        except nats.errors.TimeoutError as exc:
            raise RequestTimeoutError(
                f"no event of task {self.task_id} within {self._idle_timeout}s"
            ) from exc
        event = TaskEvent.from_bytes(msg.data)
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
