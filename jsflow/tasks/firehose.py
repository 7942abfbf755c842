"""The live firehose of task events: one core NATS subscription per hub, fanned out.

Every follower (an SSE client of the gateway's ``GET /events``, ``jsflow tasks watch``) is a
:class:`FirehoseSubscriber`: a bounded in-process queue that the one subscription's callback
fills, so any number of followers cost the server one subscription and no consumer. A
follower too slow to keep up loses the oldest events and is told how many, never blocking
the others. Live only: what happened before a follower joined is read per task with
:class:`jsflow.tasks.events.TaskEvents`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

from jsflow._js import Msg, subscriptions
from jsflow.errors import CodecError, ConnectionClosedError
from jsflow.tasks.events import TaskEvent, event_from_msg
from jsflow.tasks.streams import split_token

if TYPE_CHECKING:
    from jsflow.client import Client

__all__ = ["LIVE_SUBJECT", "Firehose", "FirehoseSubscriber", "LiveEvent"]

# Every event, request and one-shot schedule of every task of every app.
LIVE_SUBJECT = "task.*.*.>"
DEFAULT_BUFFER = 1000


@dataclass(frozen=True, slots=True)
class LiveEvent:
    """A task event as it went by: the app it belongs to and the event."""

    app: str
    event: TaskEvent


class FirehoseSubscriber:
    """One client of the firehose: events of the apps in ``apps`` (all when empty) and of
    the task names in ``names`` (all when empty), buffered up to ``buffer``."""

    def __init__(
        self,
        hub: Firehose,
        *,
        apps: frozenset[str] = frozenset(),
        names: frozenset[str] = frozenset(),
        buffer: int = DEFAULT_BUFFER,
    ) -> None:
        self._hub = hub
        self.apps = apps
        self.names = names
        self._queue: deque[LiveEvent] = deque()
        self._buffer = buffer
        self._wake = asyncio.Event()
        self.dropped = 0  # events lost to a full buffer since last taken
        self.closed = False

    def wants(self, item: LiveEvent) -> bool:
        """Whether this subscriber asked for ``item``."""
        return (not self.apps or item.app in self.apps) and (
            not self.names or item.event.name in self.names
        )

    def offer(self, item: LiveEvent) -> None:
        """Queue ``item`` without blocking (the oldest goes when the buffer is full)."""
        if len(self._queue) >= self._buffer:
            self._queue.popleft()
            self.dropped += 1
        self._queue.append(item)
        self._wake.set()

    async def next(self, timeout: float | None = None) -> tuple[list[LiveEvent], int]:
        """The events queued now (waiting up to ``timeout`` for one) and how many were
        dropped before them; ``([], 0)`` when the time passed with nothing."""
        if not self._queue and not self.closed:
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wake.wait()
        if self.closed and not self._queue:
            raise ConnectionClosedError("the firehose is closed")
        items = list(self._queue)
        self._queue.clear()
        dropped, self.dropped = self.dropped, 0
        return items, dropped

    def end(self) -> None:
        """Mark it closed without leaving (its hub is closing): :meth:`next` raises."""
        self.closed = True
        self._wake.set()

    def close(self) -> None:
        """Leave the firehose (the subscription goes when its last subscriber left)."""
        if not self.closed:
            self.closed = True
            self._wake.set()
            self._hub.leave(self)


class Firehose:
    """One subscription to :data:`LIVE_SUBJECT`, shared by every subscriber.

    Subscribed while it has subscribers; :meth:`aclose` ends them all.
    """

    def __init__(self, client: Client) -> None:
        self._client = client
        self._subscribers: set[FirehoseSubscriber] = set()
        self._sub = subscriptions.SharedSubscription(
            LIVE_SUBJECT, self._on_msg, lambda: not self._subscribers
        )
        self._closed = False
        self.received = 0  # messages the subscription delivered (diagnostics)

    @property
    def subscriber_count(self) -> int:
        """How many clients follow the firehose now."""
        return len(self._subscribers)

    @property
    def subscribed(self) -> bool:
        """Whether the core subscription is in place."""
        return self._sub.active

    async def join(
        self,
        *,
        apps: frozenset[str] = frozenset(),
        names: frozenset[str] = frozenset(),
        buffer: int = DEFAULT_BUFFER,
    ) -> FirehoseSubscriber:
        """A new subscriber; returns once the subscription is in place on the server."""
        if self._closed:
            raise ConnectionClosedError("the firehose is closed")
        subscriber = FirehoseSubscriber(self, apps=apps, names=names, buffer=buffer)
        self._subscribers.add(subscriber)
        try:
            await self._sub.ensure(self._client.nc, timeout=self._client.timeout)
        except BaseException:
            subscriber.close()
            raise
        return subscriber

    def leave(self, subscriber: FirehoseSubscriber) -> None:
        """Forget ``subscriber``; the subscription goes once none is left."""
        self._subscribers.discard(subscriber)
        self._sub.release_when_idle()

    async def _on_msg(self, msg: Msg) -> None:
        self.received += 1
        if not self._subscribers:
            return
        parts = msg.subject.split(".", 3)
        if len(parts) != 4:
            return
        try:
            event = event_from_msg(msg)
        except CodecError:
            return  # not an event of jsflow's: nothing to show
        if event is None:
            return
        if not event.time:
            event = TaskEvent(
                event.task_id, event.name, event.kind, message=event.message, time=time.time()
            )
        item = LiveEvent(split_token(parts[2])[0], event)
        for subscriber in list(self._subscribers):
            if subscriber.wants(item):
                subscriber.offer(item)

    async def aclose(self) -> None:
        """End every subscriber and drop the subscription."""
        self._closed = True
        for subscriber in list(self._subscribers):
            subscriber.end()
        self._subscribers.clear()
        await self._sub.close()
