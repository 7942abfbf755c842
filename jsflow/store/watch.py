"""Watching keys: :class:`Watch`, the async iterator of :meth:`ObjectStore.watch`, on its own
ordered feed (so it resumes after reconnects without losing or repeating a change)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from types import TracebackType
from typing import Generic, TypeVar

from jsflow._js import Msg, api, internals, map_nats_errors
from jsflow.errors import CodecError, JsflowError
from jsflow.store.bucket import Bucket
from jsflow.store.entries import EntryCodec
from jsflow.store.feeds import OrderedFeed
from jsflow.store.values import Change

__all__ = ["Watch"]

T = TypeVar("T")


class _Initial(Generic[T]):
    """The last change of the initial values, marked."""

    __slots__ = ("change",)

    def __init__(self, change: Change[T]) -> None:
        self.change = change


class _CaughtUp:
    """Queued when the watch caught up without a change to yield (an empty start, or the
    last initial change was a delete that ``ignore_deletes`` leaves out)."""


_CAUGHT_UP = _CaughtUp()


class Watch(Generic[T]):
    """Async iterator of :class:`Change` for a key, a pattern or several patterns (from
    :meth:`ObjectStore.watch`), on one consumer.

    Survives reconnects and server restarts: it resumes after the last change it delivered,
    without losing or repeating one (as long as the bucket's ``history`` still holds them).

    :attr:`caught_up` is the "initial values done" marker (nats.go's ``nil`` entry): it
    turns true once the iteration has yielded every change that was in the bucket when the
    watch started (at once for ``updates_only``, or when there was none), so a cache
    filled from a watch knows when it is complete.
    """

    def __init__(
        self,
        bucket: Bucket,
        entries: EntryCodec[T],
        patterns: Sequence[str],
        policy: api.DeliverPolicy,
        *,
        ignore_deletes: bool = False,
        start_seq: int | None = None,
    ) -> None:
        self._entries = entries
        self._ignore_deletes = ignore_deletes
        # ``None`` is put by :meth:`aclose` to end an iteration waiting in another task.
        self._queue: asyncio.Queue[Change[T] | _Initial[T] | _CaughtUp | BaseException | None] = (
            asyncio.Queue()
        )
        self._feed = OrderedFeed(
            bucket,
            [bucket.subject(p) for p in patterns],
            policy,
            deliver=self._on_msg,
            failed=self._queue.put_nowait,
            start_seq=start_seq,
        )
        self._starting: asyncio.Lock | None = None
        self._caught_up = policy is api.DeliverPolicy.NEW
        self._initial_seen = self._caught_up  # the last initial change was queued

    @property
    def caught_up(self) -> bool:
        """Whether every change in the bucket when the watch started has been yielded."""
        return self._caught_up

    def _on_msg(self, msg: Msg) -> None:
        last_initial = not self._initial_seen and not msg.metadata.num_pending
        if last_initial:
            self._initial_seen = True
        try:
            change = self._entries.change(msg)
        except CodecError as exc:
            self._queue.put_nowait(exc)
            if last_initial:
                self._queue.put_nowait(_CAUGHT_UP)
            return
        if self._ignore_deletes and change.value is None:
            if last_initial:
                self._queue.put_nowait(_CAUGHT_UP)
            return
        self._queue.put_nowait(_Initial(change) if last_initial else change)

    async def start(self) -> None:
        """Create the server-side consumer (done by the first ``__anext__`` otherwise)."""
        feed = self._feed
        if feed.running or feed.closed:
            return
        if self._starting is None:
            self._starting = asyncio.Lock()
        async with self._starting:
            if not feed.running and not feed.closed:
                await feed.open()
                if not self._initial_seen:
                    await self._check_empty()

    async def _check_empty(self) -> None:
        """Mark an empty start caught up: a consumer with nothing to deliver sends nothing
        (a non-empty one marks it on the message with no more pending)."""
        sub = self._feed.subscription
        name = internals.consumer_name(sub) if sub is not None else None
        if name is None:
            return
        bucket = self._feed.bucket
        try:
            with map_nats_errors(bucket=bucket.name):
                info = await bucket.connection.js.consumer_info(bucket.stream, name)
        except JsflowError:
            return  # best effort: the first change marks it then
        delivered = int(info.delivered.stream_seq or 0) if info.delivered else 0
        if not info.num_pending and not delivered and not self._initial_seen:
            self._initial_seen = True
            self._queue.put_nowait(_CAUGHT_UP)

    def __aiter__(self) -> Watch[T]:
        return self

    async def __anext__(self) -> Change[T]:
        """The next change; :class:`ConnectionClosedError` once the client or its connection
        closed, ``StopAsyncIteration`` after :meth:`aclose`."""
        feed = self._feed
        if feed.failure is not None:
            raise feed.failure
        if feed.closed:
            raise StopAsyncIteration
        await self.start()
        while True:
            item = await self._queue.get()
            if isinstance(item, _CaughtUp):
                self._caught_up = True
                continue
            if isinstance(item, _Initial):
                self._caught_up = True
                return item.change
            if item is None:
                raise StopAsyncIteration
            if isinstance(item, BaseException):
                raise item
            return item

    async def aclose(self) -> None:
        """Stop watching and delete the consumer; an iteration waiting meanwhile ends."""
        self._queue.put_nowait(None)
        await self._feed.close()

    async def __aenter__(self) -> Watch[T]:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
