"""Waiting for a key to change: :class:`KeyListener`, fed by the store's one shared watch of
its bucket (:class:`ListenerHub`), so that any number of waiters cost the server one consumer.
"""

from __future__ import annotations

import asyncio
from typing import Generic, TypeVar

from jsflow._js import Msg, api
from jsflow.errors import CodecError, ConnectionClosedError
from jsflow.store.bucket import Bucket
from jsflow.store.entries import EntryCodec
from jsflow.store.feeds import OrderedFeed
from jsflow.store.values import Change, Op

__all__ = ["KeyListener", "ListenerHub", "Listeners"]

T = TypeVar("T")


class KeyListener(Generic[T]):
    """One waiter's view of a key's changes, fed by the store's shared watch.

    It keeps only the *latest* change: changes that arrive while nobody is waiting collapse
    into the newest one (``wait()`` then returns it at once). That suits waiters that
    re-read the state they wait on after each wake-up (locks, semaphores, wait groups, task
    results); to see every change of a key, use :meth:`ObjectStore.watch` instead. After a
    reconnect or server restart the shared watch resumes after the last change it saw, so
    a change made meanwhile still wakes the listener.
    """

    def __init__(self, hub: ListenerHub[T], key: str) -> None:
        self._hub = hub
        self.key = key
        self._event = asyncio.Event()
        self._error: ConnectionClosedError | None = None
        self.latest: Change[T] | None = None

    # Called by its hub only (this module's own protocol between the two).
    def _notify(self, change: Change[T]) -> None:
        self.latest = change
        self._event.set()

    def _fail(self, exc: ConnectionClosedError) -> None:
        self._error = exc
        self._event.set()

    async def wait(self, timeout: float | None = None) -> Change[T] | None:
        """Wait for the next change of the key (the latest of several); ``None`` on timeout.

        Raises :class:`ConnectionClosedError` once the shared watch ended for good (the
        client or its connection closed, or the store was closed): no change can come.
        """
        if self._error is not None:
            raise self._error
        try:
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation that
            # arrives together with the event, leaving a waiter loop that never stops.
            async with asyncio.timeout(timeout):
                await self._event.wait()
        except TimeoutError:
            return None
        if self._error is not None:
            raise self._error
        self._event.clear()
        return self.latest

    def close(self) -> None:
        """Stop receiving changes."""
        self._hub.remove(self)

    def __enter__(self) -> KeyListener[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ListenerHub(Generic[T]):
    """One ordered consumer on the whole bucket, dispatching changes to key listeners."""

    def __init__(self, bucket: Bucket, entries: EntryCodec[T]) -> None:
        self._bucket = bucket
        self._entries = entries
        self._listeners: dict[str, set[KeyListener[T]]] = {}
        self._feed = OrderedFeed(
            bucket,
            (bucket.subject(">"),),
            api.DeliverPolicy.NEW,
            deliver=self._on_msg,
            failed=self._failed,
        )
        self.alive = False

    @property
    def resumes(self) -> int:
        """How many times its feed re-created its consumer after a reconnect."""
        return self._feed.resumes

    def keys(self) -> frozenset[str]:
        """The keys that have a listener now."""
        return frozenset(self._listeners)

    async def start(self) -> None:
        """Create the consumer; the hub is alive until it fails or stops."""
        await self._feed.open()
        self.alive = True

    def _on_msg(self, msg: Msg) -> None:
        key = self._bucket.key_of(msg.subject)
        listeners = self._listeners.get(key)
        if not listeners:
            return
        try:
            change = self._entries.change(msg)
        except CodecError:
            change = Change(key, None, int(msg.metadata.sequence.stream), Op.PUT)
        for listener in list(listeners):
            listener._notify(change)

    def _failed(self, exc: ConnectionClosedError) -> None:
        self.alive = False
        for group in list(self._listeners.values()):
            for listener in list(group):
                listener._fail(exc)

    def add(self, key: str) -> KeyListener[T]:
        """A new listener of ``key``."""
        listener = KeyListener(self, key)
        self._listeners.setdefault(key, set()).add(listener)
        return listener

    def remove(self, listener: KeyListener[T]) -> None:
        """Stop feeding ``listener``."""
        group = self._listeners.get(listener.key)
        if group is not None:
            group.discard(listener)
            if not group:
                del self._listeners[listener.key]

    async def stop(self) -> None:
        """End every listener (:class:`ConnectionClosedError`) and delete the consumer."""
        self._feed.fail(ConnectionClosedError(f"the store {self._bucket.name!r} was closed"))
        self.alive = False
        await self._feed.close()


class Listeners(Generic[T]):
    """A store's listener hub, started on the first :meth:`add` and again after it ended."""

    def __init__(self, bucket: Bucket, entries: EntryCodec[T]) -> None:
        self._bucket = bucket
        self._entries = entries
        self._hub: ListenerHub[T] | None = None
        self._lock = asyncio.Lock()

    @property
    def hub(self) -> ListenerHub[T] | None:
        """The current hub (``None`` before the first listener and after :meth:`stop`)."""
        return self._hub

    async def add(self, key: str) -> KeyListener[T]:
        """A listener of ``key`` on the live hub (started here when there is none)."""
        hub = self._hub
        if hub is None or not hub.alive:
            async with self._lock:
                hub = self._hub
                if hub is None or not hub.alive:
                    hub = ListenerHub(self._bucket, self._entries)
                    await hub.start()
                    self._hub = hub
        return hub.add(key)

    async def stop(self) -> None:
        """Stop the hub: its listeners end with :class:`ConnectionClosedError`."""
        if self._hub is not None:
            await self._hub.stop()
            self._hub = None
