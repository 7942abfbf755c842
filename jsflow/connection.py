"""The connection every layer works on: :class:`Connection`.

A ``Connection`` owns one nats-py connection (a :class:`jsflow._js.GuardedClient`) and its
JetStream context, and everything that lives as long as it: objects to close with it,
hooks to call when it reconnects, the default replica count of what jsflow creates on it,
and the per-connection state of the layers above (:meth:`Connection.shared`), so that no
layer keeps a module-level registry or glues attributes onto it.

The store, coordination, flow and tasks layers take a ``Connection``; :class:`jsflow.Client`
(the facade of the client layer, made by :func:`jsflow.connect`) is one.
"""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import Any, Protocol, TypeVar

from jsflow._js import JetStreamContext, NatsClient
from jsflow._validate import count, duration
from jsflow.observability import get_logger

__all__ = ["MAX_REPLICAS", "Closable", "Connection", "check_replicas"]

S = TypeVar("S")
_log = get_logger(__name__)

# JetStream's limit on the replicas of a stream or bucket.
MAX_REPLICAS = 5


def check_replicas(replicas: object, default: int = 1) -> int:
    """``replicas`` (1-5; ``None``: ``default``), else :class:`ConfigError` naming it."""
    if replicas is None:
        return default
    return int(count("replicas", replicas, minimum=1, maximum=MAX_REPLICAS))


class Closable(Protocol):
    """What :meth:`Connection.on_close` accepts."""

    async def aclose(self) -> None:
        """Release what this object holds on the connection."""
        ...


class Connection:
    """One NATS connection with JetStream and what lives as long as it.

    ``timeout`` bounds each JetStream request; ``replicas`` (1-5) is the replica count of
    every bucket and stream jsflow creates on it unless one is given where it is created.
    :attr:`nc` and :attr:`js` are the nats-py objects, for anything jsflow does not wrap.
    ``async with`` closes it (and everything registered with :meth:`on_close`) on exit.
    """

    def __init__(self, nc: NatsClient, *, timeout: float = 5.0, replicas: int = 1) -> None:
        self.nc = nc
        self.timeout = duration("timeout", timeout)
        self.js: JetStreamContext = nc.jetstream(timeout=self.timeout)
        self.replicas = check_replicas(replicas)
        # Keyed by id(): closers need not be hashable, and off_close() is O(1).
        self._closers: dict[int, Closable] = {}
        self._reconnect_callbacks: list[Callable[[], None]] = []
        self._shared: dict[Any, Any] = {}

    @property
    def is_connected(self) -> bool:
        """Whether the underlying connection is up."""
        return bool(self.nc.is_connected)

    @property
    def is_closed(self) -> bool:
        """Whether the underlying connection is closed for good."""
        return bool(self.nc.is_closed)

    def shared(self, key: Any, factory: Callable[[], S]) -> S:
        """The one object of this connection stored under ``key``, made by ``factory()`` the
        first time (per-connection state of a layer: a subscription hub, a stream setup).
        ``key`` is private to its layer: use a module-level object, not a string."""
        try:
            value: S = self._shared[key]
        except KeyError:
            value = self._shared[key] = factory()
        return value

    def on_reconnect(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` (plain, must not block) each time the connection is back.

        Watches use it to resume their consumers at once instead of waiting for missed
        heartbeats.
        """
        self._reconnect_callbacks.append(callback)

    def fire_reconnected(self) -> None:
        """Run the reconnect hooks (called by :func:`jsflow.connect`'s reconnect callback)."""
        for callback in list(self._reconnect_callbacks):
            try:
                callback()
            except Exception as exc:  # one failing hook must not starve the others
                _log.warning("client.reconnect_hook_failed", error=repr(exc))

    def on_close(self, closer: Closable) -> None:
        """Register an object with an async ``aclose()`` to be closed with this connection.

        Registered objects are closed in reverse order of registration, before the
        connection; registering the same object again does not close it twice.
        """
        self._closers[id(closer)] = closer

    def off_close(self, closer: Closable) -> None:
        """Forget ``closer`` (registered with :meth:`on_close`); no-op when not registered."""
        if self._closers.get(id(closer)) is closer:
            del self._closers[id(closer)]

    async def close(self) -> None:
        """Close every registered object, then drain and close the connection."""
        while self._closers:  # closing one may register or unregister others
            _, closer = self._closers.popitem()
            try:
                await closer.aclose()
            except Exception as exc:  # closing must go on
                _log.warning("client.close_failed", error=repr(exc))
        if not self.nc.is_closed:
            try:
                await self.nc.drain()
            except Exception:
                await self.nc.close()

    async def __aenter__(self) -> Connection:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
