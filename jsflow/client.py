"""Connecting to NATS: :func:`connect` and :class:`Client`, the entry point to every layer."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

from jsflow._js import JetStreamContext, NatsClient
from jsflow._js.connection import check_servers, open_connection
from jsflow._validate import check_name, duration
from jsflow.observability import get_logger

if TYPE_CHECKING:
    from jsflow.codec import Codec
    from jsflow.coordination.counter import Counter
    from jsflow.coordination.election import Election
    from jsflow.coordination.lock import Lock
    from jsflow.coordination.rate_limiter import RateLimiter
    from jsflow.coordination.semaphore import Semaphore
    from jsflow.coordination.wait_group import WaitGroup
    from jsflow.store import ObjectStore, RetryPolicy

__all__ = ["Client", "connect"]

T = TypeVar("T")
_log = get_logger(__name__)

# Reconnect defaults for a long-running service: fail over quickly, keep trying for about
# five minutes (bounded), and buffer publishes made while reconnecting.
SERVICE_DEFAULTS: dict[str, Any] = {
    "connect_timeout": 2.0,
    "allow_reconnect": True,
    "max_reconnect_attempts": 600,
    "reconnect_time_wait": 0.5,
    "ping_interval": 10,
    "max_outstanding_pings": 3,
    "pending_size": 8 * 1024 * 1024,
}


class Client:
    """A connection to NATS with JetStream, and the factory for jsflow's objects.

    Create with :func:`connect`; use ``async with client:`` to close it (and every store,
    watch and background task it owns) on exit. :attr:`nc` and :attr:`js` are the nats-py
    objects, for anything jsflow does not wrap.
    """

    def __init__(self, nc: NatsClient, *, timeout: float = 5.0) -> None:
        self.nc = nc
        self.js: JetStreamContext = nc.jetstream(timeout=timeout)
        self.timeout = timeout
        self._stores: dict[tuple[str, Any, int], ObjectStore[Any]] = {}
        self._store_locks: dict[str, asyncio.Lock] = {}
        # Keyed by id(): closers need not be hashable, and off_close() is O(1).
        self._closers: dict[int, Any] = {}
        self._reconnect_callbacks: list[Callable[[], None]] = []

    @property
    def is_connected(self) -> bool:
        """Whether the underlying connection is up."""
        return bool(self.nc.is_connected)

    async def object_store(
        self,
        bucket: str,
        tp: type[T],
        *,
        ttl: float | None = None,
        history: int = 1,
        replicas: int = 1,
        codec: Codec[T] | None = None,
        max_value_size: int | None = None,
        retry: RetryPolicy | None = None,
        cache_size: int = 1024,
    ) -> ObjectStore[T]:
        """Create or bind the KV ``bucket`` holding values of type ``tp`` (idempotent).

        ``ttl`` ages out every key (seconds); per-key TTLs are given on writes. The same
        bucket, type and codec asked for twice returns the same store, so in-process
        combining of concurrent updates spans every caller.
        """
        from jsflow.store import ObjectStore

        check_name("bucket", bucket)
        cache_key = (bucket, tp, id(codec))
        store = self._stores.get(cache_key)
        if store is not None and not store.closed:
            return store
        lock = self._store_locks.setdefault(bucket, asyncio.Lock())
        async with lock:
            store = self._stores.get(cache_key)
            if store is None or store.closed:
                store = await ObjectStore.open(
                    self,
                    bucket,
                    tp,
                    ttl=ttl,
                    history=history,
                    replicas=replicas,
                    codec=codec,
                    max_value_size=max_value_size,
                    retry=retry,
                    cache_size=cache_size,
                )
                self._stores[cache_key] = store
        return store

    # Coordination primitives. Imported lazily: they live in a layer above this one.

    def lock(self, name: str, ttl: float = 10.0, **options: Any) -> Lock:
        """A distributed lease lock named ``name`` (see :class:`jsflow.Lock`)."""
        from jsflow.coordination.lock import Lock

        return Lock(self, name, ttl=ttl, **options)

    def semaphore(self, name: str, permits: int, ttl: float = 10.0, **options: Any) -> Semaphore:
        """A distributed semaphore with ``permits`` holders at once."""
        from jsflow.coordination.semaphore import Semaphore

        return Semaphore(self, name, permits, ttl=ttl, **options)

    def rate_limiter(
        self, name: str, rate: float, per: float = 1.0, burst: int | None = None, **options: Any
    ) -> RateLimiter:
        """A distributed rate limiter: ``rate`` per ``per`` seconds, bursts of ``burst``."""
        from jsflow.coordination.rate_limiter import RateLimiter

        return RateLimiter(self, name, rate, per=per, burst=burst, **options)

    def counter(self, name: str, **options: Any) -> Counter:
        """A distributed counter family named ``name``."""
        from jsflow.coordination.counter import Counter

        return Counter(self, name, **options)

    def wait_group(self, name: str, **options: Any) -> WaitGroup:
        """A distributed wait group named ``name``."""
        from jsflow.coordination.wait_group import WaitGroup

        return WaitGroup(self, name, **options)

    def election(self, name: str, ttl: float = 5.0, **options: Any) -> Election:
        """Leader election for ``name`` with a leadership lease of ``ttl`` seconds."""
        from jsflow.coordination.election import Election

        return Election(self, name, ttl=ttl, **options)

    def on_reconnect(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` (plain, must not block) each time the connection is re-established.

        Watches use it to resume their consumers at once instead of waiting for missed
        heartbeats.
        """
        self._reconnect_callbacks.append(callback)

    def _fire_reconnected(self) -> None:
        for callback in list(self._reconnect_callbacks):
            try:
                callback()
            except Exception as exc:  # one failing hook must not starve the others
                _log.warning("client.reconnect_hook_failed", error=repr(exc))

    def on_close(self, closer: Any) -> None:
        """Register an object with an async ``aclose()`` to be closed with this client.

        Registered objects are closed in reverse order of registration, before the stores
        and the connection; registering the same object again does not close it twice.
        """
        self._closers[id(closer)] = closer

    def off_close(self, closer: Any) -> None:
        """Forget ``closer`` (registered with :meth:`on_close`); no-op when not registered."""
        if self._closers.get(id(closer)) is closer:
            del self._closers[id(closer)]

    async def close(self) -> None:
        """Close every store and registered object, then drain and close the connection."""
        while self._closers:  # closing one may register or unregister others
            _, closer = self._closers.popitem()
            try:
                await closer.aclose()
            except Exception as exc:  # closing must go on
                _log.warning("client.close_failed", error=repr(exc))
        for store in list(self._stores.values()):
            await store.aclose()
        self._stores.clear()
        if not self.nc.is_closed:
            try:
                await self.nc.drain()
            except Exception:
                await self.nc.close()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


async def _log_error(exc: Exception) -> None:
    _log.warning("nats.error", error=repr(exc))


async def _log_disconnected() -> None:
    _log.info("nats.disconnected")


async def connect(
    url_or_urls: str | Sequence[str] = "nats://127.0.0.1:4222",
    *,
    timeout: float = 5.0,
    **nats_options: Any,
) -> Client:
    """Connect to NATS and return a :class:`Client`.

    ``url_or_urls`` is one URL or a list (the client fails over between them). The first
    connect fails within seconds with a typed error naming the cause:
    :class:`~jsflow.AuthorizationError`, :class:`~jsflow.TLSError` (``tls://`` or ``tls=``
    never falls back to plain text), :class:`~jsflow.NotNatsServerError`,
    :class:`~jsflow.ConfigError` (a bad URL or option, before any I/O) or
    :class:`~jsflow.ConnectionFailedError`; no message shows a password. After that,
    service-style reconnect defaults apply (bounded: about five minutes of attempts); any
    nats-py ``connect`` option given here overrides them. ``timeout`` bounds each JetStream
    request.
    """
    servers = check_servers(url_or_urls)
    timeout = duration("timeout", timeout)
    created: list[Client] = []
    user_reconnected_cb = nats_options.pop("reconnected_cb", None)

    async def reconnected() -> None:
        # Chained so that a reconnected_cb of the caller's does not disable jsflow's hooks.
        _log.info("nats.reconnected")
        for client in created:
            client._fire_reconnected()
        if user_reconnected_cb is not None:
            await user_reconnected_cb()

    options = {
        **SERVICE_DEFAULTS,
        "error_cb": _log_error,
        "disconnected_cb": _log_disconnected,
        "reconnected_cb": reconnected,
        **nats_options,
    }
    # The first connect fails within seconds with a typed error naming the cause;
    # SERVICE_DEFAULTS' reconnect policy applies from then on.
    nc = await open_connection(servers, **options)
    client = Client(nc, timeout=timeout)
    created.append(client)
    return client
