"""Counter: distributed integer counters, on the server's native counters where it has them.

NATS 2.12 added counter streams (``allow_msg_counter``): a publish with the header
``Nats-Incr: +n`` adds ``n`` on the server, atomically, and its acknowledgement carries the
new total. That is one round trip per ``add`` with no compare-and-set and no retries, however
many processes add at once. On older servers (or with ``native=False``) a counter is a
``jsflow.v1.CounterState`` in an :class:`jsflow.ObjectStore`, added to with compare-and-set
(concurrent adds in one process are combined into one write).
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any

from jsflow._js import api, headers, js_errors, map_nats_errors, streams
from jsflow._proto.counter_pb2 import CounterState
from jsflow._validate import MAX_NAME_LEN, check_name, count
from jsflow.connection import check_replicas
from jsflow.errors import ConfigError, ServerError
from jsflow.keys import validate_key
from jsflow.observability import get_logger, tracer
from jsflow.store import StoreOptions, open_store

if TYPE_CHECKING:
    from jsflow.connection import Connection
    from jsflow.store import ObjectStore

__all__ = ["Counter"]

_log = get_logger(__name__)
_INCR = headers.INCR
_MIN_NATIVE = (2, 12)
_INT64 = (-(2**63), 2**63 - 1)
_BUCKET_PREFIX = "jsflow_counter_"


def _check_name(name: str) -> str:
    # The name is part of the bucket name "jsflow_counter_<name>", which is bounded too.
    return check_name("counter name", name, max_len=MAX_NAME_LEN - len(_BUCKET_PREFIX))


# Native counters are arbitrary-precision on the server; this only keeps the header short.
_MAX_N = 10**300


def _check_n(n: int) -> int:
    return count("n", n, minimum=-_MAX_N, maximum=_MAX_N)


class Counter:
    """A family of integer counters named ``name``, one per key, starting at 0.

    Create with :meth:`jsflow.Client.counter`; the constructor does no I/O. ``native=None``
    (default) uses the server's native counters when it supports them (2.12+) and falls back
    to compare-and-set otherwise; ``True`` requires them (:class:`jsflow.ServerError` if
    absent); ``False`` always uses compare-and-set (values then fit a signed 64-bit int).
    Native counters live in the stream ``JSFLOW_COUNTER_<name>`` (subjects
    ``jsflow.counter.<name>.<key>``), compare-and-set ones in the KV bucket
    ``jsflow_counter_<name>``.
    """

    def __init__(
        self,
        client: Connection,
        name: str,
        *,
        native: bool | None = None,
        replicas: int | None = None,
    ) -> None:
        self.name = _check_name(name)
        if native not in (None, True, False):
            raise ConfigError(f"native must be None, True or False, got {native!r}")
        replicas = check_replicas(replicas, client.replicas)
        self.stream = f"JSFLOW_COUNTER_{name}"
        self.bucket = f"{_BUCKET_PREFIX}{name}"
        self._prefix = f"jsflow.counter.{name}."
        self._client = client
        self._want_native = native
        self._replicas = replicas
        self._native: bool | None = None
        self._store: ObjectStore[Any] | None = None
        self._setup_lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"Counter({self.name!r}, native={self._native!r})"

    @property
    def native(self) -> bool | None:
        """Whether server-native counters are in use (``None`` until the first operation)."""
        return self._native

    def _server_has_counters(self) -> bool:
        version = self._client.nc.connected_server_version
        return (int(version.major), int(version.minor)) >= _MIN_NATIVE

    async def _setup(self) -> bool:
        if self._native is not None:
            return self._native
        async with self._setup_lock:
            if self._native is not None:
                return self._native
            native = self._want_native
            if native is None:
                native = self._server_has_counters()
            elif native and not self._server_has_counters():
                raise ServerError(
                    f"counter {self.name!r}: native counters need nats-server 2.12+, "
                    f"connected to {self._client.nc.connected_server_version}"
                )
            if native:
                await self._ensure_stream()
            else:
                self._store = await open_store(
                    self._client, self.bucket, CounterState, StoreOptions(replicas=self._replicas)
                )
            self._native = native
            _log.debug("counter.ready", counter=self.name, native=native)
            return native

    async def _ensure_stream(self) -> None:
        config = api.StreamConfig(
            name=self.stream,
            subjects=[self._prefix + ">"],
            allow_msg_counter=True,
            allow_direct=True,
            max_msgs_per_subject=1,
            num_replicas=self._replicas,
            storage=api.StorageType.FILE,
        )
        info, _ = await streams.create_or_bind(
            self._client.js, config, timeout=self._client.timeout
        )
        if not info.config.allow_msg_counter:
            raise ServerError(
                f"stream {self.stream!r} exists without allow_msg_counter; "
                "delete it or use native=False"
            )

    def _subject(self, key: str) -> str:
        return self._prefix + validate_key(key)

    async def add(self, key: str, n: int = 1) -> int:
        """Add ``n`` (may be negative) to ``key`` atomically and return the new value."""
        subject = self._subject(key)
        _check_n(n)
        with tracer().start_as_current_span("jsflow.counter.add") as span:
            span.set_attribute("jsflow.counter", self.name)
            span.set_attribute("jsflow.key", key)
            if await self._setup():
                return await self._add_native(subject, key, n)
            return await self._add_cas(key, n)

    async def _add_native(self, subject: str, key: str, n: int) -> int:
        headers = {_INCR: f"{n:+d}"}
        with map_nats_errors(subject=subject, key=key):
            reply = await self._client.nc.request(
                subject, b"", timeout=self._client.timeout, headers=headers
            )
        try:
            body = json.loads(reply.data)
        except ValueError as exc:
            raise ServerError(f"counter {self.name!r}: unreadable reply {reply.data!r}") from exc
        error = body.get("error")
        if error:
            raise ServerError(
                f"counter {self.name!r} key {key!r}: {error.get('description')} "
                f"(code {error.get('err_code')})"
            )
        return int(body["val"])

    async def _add_cas(self, key: str, n: int) -> int:
        assert self._store is not None

        def bump(state: Any) -> None:
            value = state.value + n
            if not _INT64[0] <= value <= _INT64[1]:
                raise ConfigError(f"counter {self.name!r} key {key!r} would overflow int64")
            state.value = value

        entry = await self._store.update(key, bump)
        return int(entry.value.value)

    async def get(self, key: str) -> int:
        """The current value of ``key`` (0 when it was never added to or was reset)."""
        subject = self._subject(key)
        if not await self._setup():
            assert self._store is not None
            entry = await self._store.get(key)
            return 0 if entry is None else int(entry.value.value)
        with map_nats_errors(subject=subject, key=key):
            try:
                msg = await self._client.js.get_msg(self.stream, subject=subject, direct=True)
            except js_errors.NotFoundError:
                return 0
        try:
            return int(json.loads(msg.data or b"{}").get("val", 0))
        except ValueError as exc:
            raise ServerError(f"counter {self.name!r}: unreadable value {msg.data!r}") from exc

    async def reset(self, key: str) -> None:
        """Set ``key`` back to 0 (forgets it). Adds racing with a reset may be lost."""
        subject = self._subject(key)
        if await self._setup():
            with map_nats_errors(subject=subject, key=key):
                await self._client.js.purge_stream(self.stream, subject=subject)
            return
        assert self._store is not None
        await self._store.purge(key)
