"""Ordered feeds of a bucket's changes that survive reconnects: :class:`OrderedFeed`.

A feed is an ordered push consumer that, on the client's reconnect (told by the one
:class:`ReconnectRelay` of the connection), resumes right after the last revision it
delivered; the client's close ends it (:class:`FeedCloser`), and so does its connection
closing for good. Watches and the listener hub each own one.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import jsflow.store.wire as wire  # noqa: PLR0402 -- not via the package: no cycle
from jsflow._js import Msg, api, internals, map_nats_errors
from jsflow.connection import Connection
from jsflow.errors import ConnectionClosedError, JsflowError
from jsflow.observability import get_logger
from jsflow.store.bucket import Bucket

__all__ = ["FeedCloser", "OrderedFeed", "ReconnectRelay", "reconnect_relay"]

_log = get_logger(__name__)

_RESUME_ATTEMPTS = 10
_RESUME_MAX_BACKOFF = 1.0
# How often a running feed checks (locally, no I/O) whether its connection closed for good:
# nats-py ends no subscription then, so a waiting iterator would wait forever.
_CLOSED_CHECK = 0.5


class ReconnectRelay:
    """Tells the ordered feeds (watches, listener hubs) of one client that it reconnected.

    One per :class:`jsflow.Connection`, created on first use. It holds its feeds weakly; each
    feed registers while it runs and unregisters when it stops.
    """

    def __init__(self) -> None:
        self._feeds: weakref.WeakSet[OrderedFeed] = weakref.WeakSet()

    def add(self, feed: OrderedFeed) -> None:
        """Tell ``feed`` of the client's reconnects (until :meth:`discard`)."""
        self._feeds.add(feed)

    def discard(self, feed: OrderedFeed) -> None:
        """Stop telling ``feed``."""
        self._feeds.discard(feed)

    def fire(self) -> None:
        """Called once the connection is back: every live feed re-creates its consumer."""
        for feed in list(self._feeds):
            feed.reconnected()


def reconnect_relay(client: Connection) -> ReconnectRelay:
    """The client's relay, hooked to its reconnects the first time it is asked for.

    Registered through :meth:`Connection.on_reconnect`.
    """

    def make() -> ReconnectRelay:
        relay = ReconnectRelay()
        client.on_reconnect(relay.fire)
        return relay

    return client.shared(ReconnectRelay, make)


class FeedCloser:
    """Registered with :meth:`Connection.on_close` for a running feed: the client's close ends
    the feed with :class:`ConnectionClosedError` (before the connection goes)."""

    __slots__ = ("_feed",)

    def __init__(self, feed: OrderedFeed) -> None:
        self._feed = feed

    async def aclose(self) -> None:
        """End the feed: its owner's waiters get :class:`ConnectionClosedError`."""
        feed = self._feed
        feed.fail(ConnectionClosedError(f"the client closed ({feed.subject})"))
        await feed.close()


class OrderedFeed:
    """An ordered consumer on ``subjects`` (one or several) that resumes promptly, exactly
    where it left off.

    nats-py re-creates an ordered consumer only after two missed idle heartbeats (2-4 s
    after a server restart). A feed also listens for the client's reconnects and then, at
    once, creates a consumer starting after the last revision it delivered (with bounded,
    jittered retries while JetStream recovers) and drops the old one. Revisions at or below
    the last delivered are skipped, so however the consumers overlap, each change is
    delivered once and in order. A feed with ``DeliverPolicy.NEW`` notes where its consumer
    started, so that nothing written after that is missed or replayed either.

    Each new message goes to ``deliver``. A feed ends with :class:`ConnectionClosedError`
    (:meth:`fail`, which calls ``failed`` once) when its client closes or its connection
    closes for good (checked every ``_CLOSED_CHECK`` seconds by a timer, not a task).
    """

    def __init__(
        self,
        bucket: Bucket,
        subjects: Sequence[str],
        policy: api.DeliverPolicy,
        *,
        deliver: Callable[[Msg], None],
        failed: Callable[[ConnectionClosedError], None],
        start_seq: int | None = None,
    ) -> None:
        self._bucket = bucket
        self._start = start_seq  # BY_START_SEQUENCE: the first revision to deliver
        self.subjects = tuple(subjects)
        """The subjects its consumer filters on."""
        self.subject = wire.describe(self.subjects)
        """:attr:`subjects` for messages and logs."""
        self._policy = policy
        self._deliver = deliver
        self._failed = failed
        self._sub: Any = None
        self._last = 0
        self._closed = False
        self._resume_task: asyncio.Task[None] | None = None
        self._resume_again = False
        self._floor_known = False
        self._closer = FeedCloser(self)
        self._watchdog: asyncio.TimerHandle | None = None
        self._failure: ConnectionClosedError | None = None
        self.resumes = 0
        """How many times it re-created its consumer after a reconnect."""

    @property
    def bucket(self) -> Bucket:
        """The bucket fed from."""
        return self._bucket

    @property
    def subscription(self) -> Any:
        """The current subscription (``None`` before :meth:`open` and after :meth:`close`)."""
        return self._sub

    @property
    def running(self) -> bool:
        """Whether it has a consumer (opened and neither closed nor ended)."""
        return self._sub is not None

    @property
    def closed(self) -> bool:
        """Whether it was closed (or its connection closed for good)."""
        return self._closed

    @property
    def failure(self) -> ConnectionClosedError | None:
        """Why it ended for good, once it did."""
        return self._failure

    async def _on_msg(self, msg: Msg) -> None:
        revision = int(msg.metadata.sequence.stream)
        if revision <= self._last:  # a consumer re-created after a reconnect may repeat
            return
        self._last = revision
        self._deliver(msg)

    def fail(self, exc: ConnectionClosedError) -> None:
        """End the feed with ``exc``: no more changes; waiters get ``exc``."""
        if self._failure is not None or self._closed:
            return
        self._failure = exc
        self._failed(exc)

    def _arm_watchdog(self) -> None:
        self._watchdog = asyncio.get_running_loop().call_later(_CLOSED_CHECK, self._check_closed)

    def _check_closed(self) -> None:
        self._watchdog = None
        if self._closed:
            return
        if not self._bucket.connection.is_closed:
            self._arm_watchdog()
            return
        self.fail(ConnectionClosedError(f"the connection is closed ({self.subject})"))
        # Nothing to tell the server any more: forget the subscription here, synchronously.
        self._closed = True
        self._forget()
        self._sub = None

    def _resume_from(self) -> int | None:
        """Where a new consumer starts: after the last revision seen (``None``: the policy)."""
        if self._last or self._floor_known:
            return self._last + 1
        return self._start  # nothing delivered yet: the original start loses nothing

    async def _subscribe(self, start_seq: int | None) -> Any:
        """A new ordered consumer with heartbeats (nats-py re-creates it after a gap)."""
        return await wire.ordered_consumer(
            self._bucket,
            self.subjects,
            self._policy,
            cb=self._on_msg,
            start_seq=start_seq,
            idle_heartbeat=1.0,
            inactive_threshold=300.0,
        )

    async def open(self) -> None:
        """Create the consumer and hook the feed to its client (reconnects, close)."""
        bucket = self._bucket
        client = bucket.connection
        sub = self._sub = await self._subscribe(self._start)
        reconnect_relay(client).add(self)
        client.on_close(self._closer)
        if self._watchdog is None:
            self._arm_watchdog()
        name = internals.consumer_name(sub)  # always known for a push subscription of nats-py
        if self._policy is api.DeliverPolicy.NEW and name is not None:
            # A new consumer reports the stream's last sequence as delivered: everything
            # after it is this feed's to deliver, even across a reconnect before any change.
            try:
                with map_nats_errors(bucket=bucket.name):
                    info = await client.js.consumer_info(bucket.stream, name)
                floor = int(info.delivered.stream_seq or 0) if info.delivered else 0
            except JsflowError as exc:  # best effort: resuming then uses the policy again
                _log.debug("store.feed.floor_unknown", bucket=bucket.name, error=repr(exc))
                return
            self._last = max(self._last, floor)
            self._floor_known = True
            internals.mark_seen(sub, self._last)  # nats-py's own recovery resumes after it, too

    def reconnected(self) -> None:
        """The client reconnected: resume on a new consumer after the last revision."""
        if self._closed:
            return
        if self._resume_task is not None and not self._resume_task.done():
            self._resume_again = True  # reconnected again while resuming: go once more
            return
        self._resume_task = asyncio.get_running_loop().create_task(self._resume())

    async def _resume(self) -> None:
        bucket = self._bucket
        backoff = 0.05
        attempt = 0
        while not self._closed and attempt < _RESUME_ATTEMPTS:
            self._resume_again = False
            attempt += 1
            try:
                new = await self._subscribe(self._resume_from())
            except JsflowError as exc:  # JetStream may still be recovering after a restart
                _log.debug(
                    "store.feed.resume_retry",
                    bucket=bucket.name,
                    subject=self.subject,
                    attempt=attempt,
                    error=repr(exc),
                )
                await asyncio.sleep(random.uniform(backoff / 2, backoff))
                backoff = min(_RESUME_MAX_BACKOFF, backoff * 2)
                continue
            old, self._sub = self._sub, new
            self.resumes += 1
            if self._closed:  # closed while subscribing: the close saw the old one only
                old, self._sub = new, None
            if old is not None:
                await bucket.close_subscription(old)
            if not self._resume_again:
                _log.debug("store.feed.resumed", bucket=bucket.name, after=self._last)
                return
            attempt = 0  # another reconnect happened meanwhile: resume once more
        if not self._closed:
            # nats-py's heartbeat-driven recovery of the old consumer is still there.
            _log.warning("store.feed.resume_failed", bucket=bucket.name, subject=self.subject)

    def _forget(self) -> None:
        """Unhook from the client (relay, close hook, watchdog) and cancel a resume."""
        client = self._bucket.connection
        reconnect_relay(client).discard(self)
        client.off_close(self._closer)
        watchdog, self._watchdog = self._watchdog, None
        if watchdog is not None:
            watchdog.cancel()
        task = self._resume_task
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    async def close(self) -> None:
        """Stop: unhook from the client, end a resume, delete the consumer."""
        self._closed = True
        self._forget()
        task, self._resume_task = self._resume_task, None
        if task is not None and task is not asyncio.current_task():
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        sub, self._sub = self._sub, None
        if sub is not None:
            await self._bucket.close_subscription(sub)
