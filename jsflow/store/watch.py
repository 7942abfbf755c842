"""Watching keys: :class:`Watch`, the async iterator of :meth:`ObjectStore.watch`, on its own
ordered feed (so it resumes after reconnects without losing or repeating a change)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from types import TracebackType
from typing import Generic, TypeVar

from jsflow._js import Msg, api
from jsflow.errors import CodecError
from jsflow.store.bucket import Bucket
from jsflow.store.entries import EntryCodec
from jsflow.store.feeds import OrderedFeed
from jsflow.store.values import Change

__all__ = ["Watch"]

T = TypeVar("T")


class Watch(Generic[T]):
    """Async iterator of :class:`Change` for a key, a pattern or several patterns (from
    :meth:`ObjectStore.watch`), on one consumer.

    Survives reconnects and server restarts: it resumes after the last change it delivered,
    without losing or repeating one (as long as the bucket's ``history`` still holds them).
    """

    def __init__(
        self,
        bucket: Bucket,
        entries: EntryCodec[T],
        pattern: str | Sequence[str],
        policy: api.DeliverPolicy,
        *,
        ignore_deletes: bool = False,
        start_seq: int | None = None,
    ) -> None:
        self._entries = entries
        self._ignore_deletes = ignore_deletes
        # ``None`` is put by :meth:`aclose` to end an iteration waiting in another task.
        self._queue: asyncio.Queue[Change[T] | BaseException | None] = asyncio.Queue()
        self._feed = OrderedFeed(
            bucket,
            [bucket.subject(p) for p in ((pattern,) if isinstance(pattern, str) else pattern)],
            policy,
            deliver=self._on_msg,
            failed=self._queue.put_nowait,
            start_seq=start_seq,
        )
        self._starting: asyncio.Lock | None = None

    def _on_msg(self, msg: Msg) -> None:
        try:
            change = self._entries.change(msg)
        except CodecError as exc:
            self._queue.put_nowait(exc)
            return
        if self._ignore_deletes and change.value is None:
            return
        self._queue.put_nowait(change)

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
        item = await self._queue.get()
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
