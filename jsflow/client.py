"""Connecting to NATS: :func:`connect` and :class:`Client`, the entry point to every layer."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

from jsflow._js import js_errors, map_nats_errors
from jsflow._js.connection import check_servers, open_connection
from jsflow._js.headers import MSG_ID
from jsflow._validate import check_id, check_name, check_subject, duration
from jsflow.codec import Codec, encode_value
from jsflow.connection import Connection, check_replicas
from jsflow.coordination.counter import Counter
from jsflow.coordination.election import Election
from jsflow.coordination.lock import Lock
from jsflow.coordination.rate_limiter import RateLimiter
from jsflow.coordination.semaphore import Semaphore
from jsflow.coordination.wait_group import WaitGroup
from jsflow.observability import get_logger, inject_context
from jsflow.store import ObjectStore, RetryPolicy, StoreOptions, close_stores, open_store

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


class Client(Connection):
    """A connection to NATS with JetStream, and the factory for jsflow's objects.

    Create with :func:`connect`; use ``async with client:`` to close it (and every store,
    watch and background task it owns) on exit. :attr:`nc` and :attr:`js` are the nats-py
    objects, for anything jsflow does not wrap; ``replicas`` is the default replica count
    of every bucket and stream jsflow creates through it (see :class:`Connection`).
    """

    async def object_store(
        self,
        bucket: str,
        tp: type[T],
        *,
        ttl: float | None = None,
        history: int = 1,
        replicas: int | None = None,
        codec: Codec[T] | None = None,
        max_value_size: int | None = None,
        retry: RetryPolicy | None = None,
        cache_size: int = 1024,
    ) -> ObjectStore[T]:
        """Create or bind the KV ``bucket`` holding values of type ``tp`` (idempotent).

        ``ttl`` ages out every key (seconds); per-key TTLs are given on writes. The same
        bucket, type and codec asked for twice returns the same store, so in-process
        combining of concurrent updates spans every caller. ``replicas`` defaults to the
        client's; a bucket that exists keeps its own.
        """
        options = StoreOptions(
            ttl, history, replicas, codec, max_value_size, retry, cache_size
        )  # checked here, before any I/O
        return await open_store(self, bucket, tp, options)

    async def publish(
        self,
        subject: str,
        value: Any,
        *,
        codec: Codec[Any] | None = None,
        headers: dict[str, str] | None = None,
        msg_id: str | None = None,
    ) -> int:
        """Publish ``value`` to the stream capturing ``subject`` and return its stream
        sequence once stored: a flow's typed producer.

        ``value`` is encoded with ``codec``, or the codec of its type (bytes as they are),
        the same way a ``StreamSource`` of that type decodes it. ``msg_id`` sets
        ``Nats-Msg-Id``, so a retried publish is stored once within the stream's duplicate
        window. :class:`jsflow.NoStreamError` when no stream answers for the subject
        (declare the flow's streams first: ``await flow.declare()``).
        """
        check_subject("subject", subject)
        data = encode_value(value, codec)
        hdrs = dict(headers or {})
        if msg_id is not None:
            hdrs[MSG_ID] = check_id("msg_id", msg_id)
        inject_context(hdrs)
        with map_nats_errors(subject=subject):
            ack = await self.js.publish(subject, data, headers=hdrs or None)
        return int(ack.seq)

    async def buckets(self) -> list[str]:
        """The names of the KV buckets on the server, sorted."""
        with map_nats_errors():
            infos = await self.js.streams_info()
        names = (i.config.name or "" for i in infos)
        return sorted(n[3:] for n in names if n.startswith("KV_"))

    async def delete_bucket(self, bucket: str) -> bool:
        """Delete the KV ``bucket`` and everything in it; ``False`` when it did not exist.
        Stores this client opened on it are closed first."""
        check_name("bucket", bucket)
        await close_stores(self, bucket)
        with map_nats_errors(bucket=bucket):
            try:
                return bool(await self.js.delete_stream(f"KV_{bucket}"))
            except js_errors.NotFoundError:
                return False

    def lock(self, name: str, ttl: float = 10.0, **options: Any) -> Lock:
        """A distributed lease lock named ``name`` (see :class:`jsflow.Lock`)."""
        return Lock(self, name, ttl=ttl, **options)

    def semaphore(self, name: str, permits: int, ttl: float = 10.0, **options: Any) -> Semaphore:
        """A distributed semaphore with ``permits`` holders at once."""
        return Semaphore(self, name, permits, ttl=ttl, **options)

    def rate_limiter(
        self,
        name: str,
        rate: float | str | tuple[float, float],
        per: float = 1.0,
        burst: int | None = None,
        **options: Any,
    ) -> RateLimiter:
        """A distributed rate limiter: ``rate`` per ``per`` seconds (or ``"10/s"``,
        ``"100 per minute"``), bursts of ``burst``."""
        return RateLimiter(self, name, rate, per=per, burst=burst, **options)

    def counter(self, name: str, **options: Any) -> Counter:
        """A distributed counter family named ``name``."""
        return Counter(self, name, **options)

    def wait_group(self, name: str, **options: Any) -> WaitGroup:
        """A distributed wait group named ``name``."""
        return WaitGroup(self, name, **options)

    def election(self, name: str, ttl: float = 5.0, **options: Any) -> Election:
        """Leader election for ``name`` with a leadership lease of ``ttl`` seconds."""
        return Election(self, name, ttl=ttl, **options)

    async def __aenter__(self) -> Client:
        return self


async def _log_error(exc: Exception) -> None:
    _log.warning("nats.error", error=repr(exc))


async def connect(
    url_or_urls: str | Sequence[str] = "nats://127.0.0.1:4222",
    *,
    timeout: float = 5.0,
    replicas: int = 1,
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
    request. ``replicas`` (1-5) is the replica count of every bucket and stream jsflow
    creates on this client (task stream and states, coordination buckets, flow sources,
    sinks and dead letters, stores) unless one is given where it is created: 3 on a
    3-node cluster survives the loss of any node.
    """
    servers = check_servers(url_or_urls)
    timeout = duration("timeout", timeout)
    replicas = check_replicas(replicas)
    created: list[Client] = []
    user_reconnected_cb = nats_options.pop("reconnected_cb", None)

    async def disconnected() -> None:
        # A close (drain) disconnects too: only a lost connection is worth a warning.
        if any(c.nc.is_closed or c.nc.is_draining for c in created):
            _log.debug("nats.disconnected", detail="closing")
            return
        _log.warning("nats.disconnected", detail="reconnecting; publishes are buffered meanwhile")

    async def reconnected() -> None:
        # Chained so that a reconnected_cb of the caller's does not disable jsflow's hooks.
        _log.warning("nats.reconnected")
        for client in created:
            client.fire_reconnected()
        if user_reconnected_cb is not None:
            await user_reconnected_cb()

    options = {
        **SERVICE_DEFAULTS,
        "error_cb": _log_error,
        "disconnected_cb": disconnected,
        "reconnected_cb": reconnected,
        **nats_options,
    }
    # The first connect fails within seconds with a typed error naming the cause;
    # SERVICE_DEFAULTS' reconnect policy applies from then on.
    nc = await open_connection(servers, **options)
    client = Client(nc, timeout=timeout, replicas=replicas)
    created.append(client)
    return client
