"""ObjectStore[T]: typed state in a JetStream KV bucket with optimistic read-modify-write.

Every write of :meth:`ObjectStore.update` is a compare-and-set on the revision it read. In one
process, concurrent updates of a key are *combined*: queued in arrival order, applied to one
read, and written with one compare-and-set; each caller still gets its own result. The store
remembers the last entry it read or wrote for recently used keys and tries the compare-and-set
against it first, so an uncontended update costs one round trip.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import enum
import inspect
import json
import random
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    stop_after_delay,
)

from jsflow._js import Msg, api, codes, headers, js_errors, map_nats_errors, nats_errors
from jsflow._validate import check_name, count, duration, one_of, optional_duration
from jsflow.codec import Codec, codec_for
from jsflow.connection import check_replicas
from jsflow.errors import (
    BucketError,
    CodecError,
    ConfigError,
    ConflictError,
    ConnectionClosedError,
    JsflowError,
    KeyExistsError,
    PayloadTooLargeError,
    ServerError,
)
from jsflow.keys import validate_key, validate_pattern
from jsflow.observability import get_logger, tracer

if TYPE_CHECKING:
    from jsflow.connection import Connection

__all__ = [
    "Change",
    "Entry",
    "KeyListener",
    "ObjectStore",
    "Op",
    "RetryPolicy",
    "Watch",
    "open_store",
]

T = TypeVar("T")
_log = get_logger(__name__)

_KV_OP = "KV-Operation"
_MARKER_REASON = headers.MARKER_REASON
_EXPECTED_LAST_SUBJ_SEQ = headers.EXPECTED_LAST_SUBJECT_SEQUENCE
_TTL = headers.TTL
_ROLLUP = headers.ROLLUP
_WRONG_LAST_SEQUENCE = codes.WRONG_LAST_SEQUENCE
_json_decode = json.JSONDecoder().decode
_PAGE_OVERLAP = 1000  # subjects a page of a paged subject listing re-reads of the last one
MIN_TTL = 1.0
"""The shortest per-key TTL the server accepts (it rejects per-message TTLs under 1 s)."""


class Op(enum.Enum):
    """What a change did to a key."""

    PUT = "PUT"
    DELETE = "DEL"
    PURGE = "PURGE"


@dataclass(frozen=True, slots=True)
class Entry(Generic[T]):
    """A key's value at a revision (the stream sequence of the write)."""

    key: str
    value: T
    revision: int


@dataclass(frozen=True, slots=True)
class Change(Generic[T]):
    """One change of a key, as seen by :meth:`ObjectStore.watch` and ``history``.

    ``value`` is ``None`` for deletes and purges (including server-side TTL expiry).
    """

    key: str
    value: T | None
    revision: int
    op: Op


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Bounds on :meth:`ObjectStore.update` retries after revision conflicts.

    Backoff is exponential with full jitter: attempt ``n`` sleeps a random time in
    ``[0, min(max_backoff, initial_backoff * 2**n)]``. Retrying stops at ``attempts`` or
    when ``deadline`` seconds have passed, whichever comes first.
    """

    attempts: int = 20
    deadline: float = 10.0
    initial_backoff: float = 0.002
    max_backoff: float = 0.25

    def __post_init__(self) -> None:
        count("RetryPolicy.attempts", self.attempts, minimum=1)
        duration("RetryPolicy.deadline", self.deadline)
        initial = duration("RetryPolicy.initial_backoff", self.initial_backoff, positive=False)
        if duration("RetryPolicy.max_backoff", self.max_backoff, positive=False) < initial:
            raise ConfigError("RetryPolicy needs 0 <= initial_backoff <= max_backoff")


@dataclass(slots=True)
class _Raw:
    """Stored bytes of a key at a revision; ``data is None`` means absent or deleted."""

    revision: int
    data: bytes | None


@dataclass(slots=True)
class _Pending(Generic[T]):
    fn: Callable[[T], T | None]
    future: asyncio.Future[Entry[T]]
    ttl: float | None


@dataclass(slots=True)
class _Slot(Generic[T]):
    pending: list[_Pending[T]] = field(default_factory=list)
    task: asyncio.Task[None] | None = None


class _Conflict(Exception):
    """Internal: a compare-and-set lost; carries whether the base came from the cache."""

    def __init__(self, from_cache: bool, revision: int) -> None:
        self.from_cache = from_cache
        self.revision = revision


_ttl_headers: dict[float, str] = {}


def _ttl_header(ttl: object) -> str:
    """The ``Nats-TTL`` header of a per-key ``ttl`` (validated; :class:`ConfigError` if bad).

    Always :func:`jsflow._js.headers.ttl_value`: whole seconds, rounded up, because the server
    keeps whole seconds and a writer counting on ``ttl`` must not see the key expire sooner.
    """
    if type(ttl) is float or type(ttl) is int:  # the hot path: a ttl seen before
        header = _ttl_headers.get(ttl)
        if header is not None:
            return header
    seconds = duration("ttl", ttl, minimum=MIN_TTL, positive=False)
    header = headers.ttl_value(seconds)
    if len(_ttl_headers) < 256:
        _ttl_headers[seconds] = header
    return header


def _same_kind(result: object, state: object) -> bool:
    """Whether an update fn's return value can replace ``state`` (ints may replace floats)."""
    if isinstance(result, type(state)):
        return True
    return isinstance(state, float) and isinstance(result, int) and not isinstance(result, bool)


def _op_of(headers: dict[str, str] | None) -> Op:
    if not headers:
        return Op.PUT
    op = headers.get(_KV_OP)
    if op == "DEL":
        return Op.DELETE
    if op == "PURGE":
        return Op.PURGE
    reason = headers.get(_MARKER_REASON)
    if reason in ("MaxAge", "Purge"):
        return Op.PURGE
    if reason == "Remove":
        return Op.DELETE
    return Op.PUT


def _check_kv_stream(bucket: str, info: api.StreamInfo) -> None:
    """Raise :class:`BucketError` unless the stream ``KV_<bucket>`` is a KV bucket.

    A plain stream that happens to carry that name would be bound and fail later, on the
    first write (no stream captures ``$KV.<bucket>.*``) or read.
    """
    subjects = list(info.config.subjects or [])
    if subjects != [f"$KV.{bucket}.>"]:
        raise BucketError(
            f"stream KV_{bucket} exists but is not the KV bucket {bucket!r}: its subjects are "
            f"{subjects[:5]!r}, a bucket's are ['$KV.{bucket}.>']; use another bucket name or "
            "delete that stream"
        )


async def _await_stream_leader(client: Connection, bucket: str) -> None:
    """Wait (bounded by the client's timeout) until a new replicated bucket has a leader.

    A clustered stream answers its creation before its replicas elect a leader; a write in
    between finds no stream (``NoStreamResponseError``), so wait here instead.
    """
    deadline = time.monotonic() + client.timeout
    while True:
        try:
            info = await client.js.stream_info(f"KV_{bucket}")
            if info.cluster is None or info.cluster.leader:
                return
        except nats_errors.TimeoutError:
            pass
        if time.monotonic() > deadline:
            raise BucketError(f"bucket {bucket!r} has no stream leader after {client.timeout}s")
        await asyncio.sleep(0.05)


class ObjectStore(Generic[T]):
    """Typed values of type ``T`` in the JetStream KV bucket :attr:`bucket`.

    Get one with :meth:`jsflow.Client.object_store`. All methods validate keys before any I/O
    and raise :class:`jsflow.InvalidKeyError` for illegal ones.
    """

    def __init__(
        self,
        client: Connection,
        bucket: str,
        codec: Codec[T],
        *,
        retry: RetryPolicy,
        cache_size: int,
        max_value_size: int,
        leader_reads: bool = False,
    ) -> None:
        self._client = client
        # A replicated bucket's followers may answer direct gets from behind the leader; reads
        # then go to the leader so a get after an acknowledged write always sees it.
        self._direct_reads = not leader_reads
        self.bucket = bucket
        self.codec = codec
        self.retry = retry
        self._stream = f"KV_{bucket}"
        self._prefix = f"$KV.{bucket}."
        self._cache: OrderedDict[str, _Raw] = OrderedDict()
        self._cache_size = cache_size
        self._max_value_size = max_value_size
        self._slots: dict[str, _Slot[T]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._hub: _ListenerHub[T] | None = None
        self._hub_lock = asyncio.Lock()
        self._closed = False

    @property
    def connection(self) -> Connection:
        """The connection this store works on."""
        return self._client

    @classmethod
    async def open(
        cls,
        client: Connection,
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
        """Create or bind ``bucket`` (idempotent); prefer :meth:`jsflow.Client.object_store`."""
        check_name("bucket", bucket)
        ttl = optional_duration("ttl", ttl)
        history = count("history", history, minimum=1, maximum=64)
        replicas = check_replicas(replicas, client.replicas)
        cache_size = count("cache_size", cache_size, minimum=0)
        if max_value_size is not None:
            max_value_size = count("max_value_size", max_value_size, minimum=1)
        if retry is not None:
            one_of("retry", retry, RetryPolicy)
        resolved = codec_for(tp, codec)
        server_max = int(client.nc.max_payload) - 1024  # room for headers
        limit = min(max_value_size, server_max) if max_value_size else server_max
        js = client.js
        with map_nats_errors(bucket=bucket):
            try:
                info = await js.stream_info(f"KV_{bucket}")
                _check_kv_stream(bucket, info)
                replicas = int(info.config.num_replicas or 1)
            except js_errors.NotFoundError:
                config = api.KeyValueConfig(
                    bucket=bucket,
                    history=history,
                    ttl=ttl,
                    replicas=replicas,
                    direct=True,
                    max_value_size=max_value_size or -1,
                    storage=api.StorageType.FILE,
                    # Markers make server-side expiry of per-key TTLs visible to watchers.
                    limit_marker_ttl=1.0,
                )
                try:
                    await js.create_key_value(config)
                except js_errors.BadRequestError as exc:
                    if exc.err_code != codes.STREAM_NAME_IN_USE:
                        raise BucketError(f"cannot create bucket {bucket!r}: {exc}") from exc
                    # created concurrently (with another config): bind to it, if it is a bucket
                    _check_kv_stream(bucket, await js.stream_info(f"KV_{bucket}"))
                if replicas > 1:
                    await _await_stream_leader(client, bucket)
        return cls(
            client,
            bucket,
            resolved,
            retry=retry or RetryPolicy(),
            cache_size=cache_size,
            max_value_size=limit,
            leader_reads=replicas > 1,
        )

    # -- low level -------------------------------------------------------------------------

    def _check_key(self, key: str) -> None:
        """:func:`validate_key`, skipped for keys in the cache (only valid keys get there)."""
        if type(key) is not str or key not in self._cache:
            validate_key(key)

    def _remember(self, key: str, raw: _Raw) -> None:
        if self._cache_size == 0:
            return
        old = self._cache.get(key)
        if old is not None and old.revision > raw.revision:
            return
        self._cache[key] = raw
        self._cache.move_to_end(key)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    def _decode(self, key: str, raw: _Raw) -> T:
        assert raw.data is not None
        try:
            return self.codec.decode(raw.data)
        except Exception as exc:
            raise CodecError(
                f"cannot decode value: {type(exc).__name__}: {exc}",
                bucket=self.bucket,
                key=key,
                revision=raw.revision,
            ) from exc

    def _encode(self, key: str, value: T) -> bytes:
        try:
            data = self.codec.encode(value)
        except CodecError as exc:
            raise CodecError(str(exc), bucket=self.bucket, key=key) from exc
        except Exception as exc:
            raise CodecError(
                f"cannot encode {type(value).__name__}: {exc}", bucket=self.bucket, key=key
            ) from exc
        if len(data) > self._max_value_size:
            raise PayloadTooLargeError(
                f"value for key {key!r} in bucket {self.bucket!r} is {len(data)} bytes; "
                f"the limit is {self._max_value_size}"
            )
        return data

    async def _read(self, key: str) -> _Raw:
        subject = self._prefix + key
        with map_nats_errors(bucket=self.bucket, key=key):
            try:
                msg = await self._client.js.get_msg(
                    self._stream, subject=subject, direct=self._direct_reads
                )
            except js_errors.NotFoundError:
                raw = _Raw(0, None)
                self._remember(key, raw)
                return raw
        op = _op_of(msg.headers)
        seq = int(msg.seq or 0)
        raw = _Raw(seq, (msg.data or b"") if op is Op.PUT else None)
        self._remember(key, raw)
        return raw

    async def _publish(
        self,
        key: str,
        data: bytes,
        *,
        expected: int | None = None,
        ttl: float | None = None,
        headers: dict[str, str] | None = None,
    ) -> int:
        hdrs = dict(headers) if headers else {}
        if expected is not None:
            hdrs[_EXPECTED_LAST_SUBJ_SEQ] = str(expected)
        if ttl is not None:
            hdrs[_TTL] = _ttl_header(ttl)
        return await self._publish_raw(key, data, hdrs or None, expected)

    async def _publish_raw(
        self, key: str, data: bytes, headers: dict[str, str] | None, expected: int | None
    ) -> int:
        """Publish to ``key``'s subject and return the stream sequence the server stored.

        A JetStream publish is a request whose reply is the JSON ack; this sends it with
        ``nc.request`` and reads ``seq`` itself (what ``js.publish`` does, minus building a
        ``PubAck``), and maps nats-py errors only when one was raised, so the common path
        enters no context manager.
        """
        client = self._client
        try:
            msg = await client.nc.request(
                self._prefix + key, data, timeout=client.timeout, headers=headers
            )
        except Exception as exc:
            if isinstance(exc, nats_errors.NoRespondersError):
                exc = js_errors.NoStreamResponseError()
            with map_nats_errors(bucket=self.bucket, key=key):
                raise exc from None
            raise  # pragma: no cover - map_nats_errors always raises
        try:
            reply = _json_decode(msg.data.decode())
        except ValueError:
            reply = None
        if type(reply) is dict:
            error = reply.get("error")
            if error is None and "seq" in reply:
                return int(reply["seq"])
            if type(error) is dict:
                if error.get("err_code") in _WRONG_LAST_SEQUENCE:
                    raise ConflictError(self.bucket, key, revision=expected)
                with map_nats_errors(bucket=self.bucket, key=key):
                    js_errors.APIError.from_error({"code": 0, **error})
        raise ServerError(
            f"unexpected reply to a publish: {msg.data[:200]!r} "
            f"(bucket={self.bucket!r}, key={key!r})"
        )

    # -- reads -----------------------------------------------------------------------------

    async def get(self, key: str) -> Entry[T] | None:
        """The current value of ``key``, or ``None`` when absent or deleted."""
        self._check_key(key)
        with tracer().start_as_current_span("jsflow.store.get") as span:
            span.set_attribute("jsflow.bucket", self.bucket)
            span.set_attribute("jsflow.key", key)
            raw = await self._read(key)
            if raw.data is None:
                return None
            return Entry(key, self._decode(key, raw), raw.revision)

    async def keys(self, filter: str = ">") -> list[str]:
        """Keys matching ``filter`` whose latest entry is not a delete (sorted).

        Every key that exists throughout the call is listed exactly once, however many
        writes other clients make meanwhile. Which keys exist comes from one server-side
        snapshot of the bucket's subjects (the stream info's subject map, no values read);
        deleted keys, whose last message is a delete marker, are then found by a
        headers-only scan of each key's last message up to that snapshot.
        """
        validate_pattern(filter)
        subject = self._prefix + filter
        subjects, last_seq = await self._subjects(subject)
        if not subjects:
            return []
        deleted: set[str] = set()
        for msg in await self._scan(
            filter, api.DeliverPolicy.LAST_PER_SUBJECT, headers_only=True, until=last_seq
        ):
            if _op_of(msg.headers) is Op.PUT:
                deleted.discard(msg.subject)
            else:
                deleted.add(msg.subject)
        start = len(self._prefix)
        return sorted(s[start:] for s in subjects if s not in deleted)

    async def _subjects(self, subject: str) -> tuple[set[str], int]:
        """The subjects matching ``subject`` that hold messages, and the stream's last
        sequence then, from ``STREAM.INFO`` with ``subjects_filter``.

        The server answers each page (up to 100,000 subjects, sorted) from one snapshot.
        Pages of a large result come from successive snapshots, so the next page is asked
        for with an overlap; when writes in between shifted it past the last subject seen,
        the overlap grows until the page starts at or before it, so nothing is skipped.
        """
        client = self._client
        api_prefix = getattr(client.js, "_prefix", None) or "$JS.API"
        request_subject = f"{api_prefix}.STREAM.INFO.{self._stream}"
        found: set[str] = set()
        last_seq = 0
        offset = 0
        previous_last: str | None = None
        back = _PAGE_OVERLAP
        while True:
            request = json.dumps({"subjects_filter": subject, "offset": offset}).encode()
            with map_nats_errors(bucket=self.bucket, subject=subject):
                reply = await client.nc.request(request_subject, request, timeout=client.timeout)
            try:
                info = _json_decode(reply.data.decode())
            except ValueError:
                info = None
            if type(info) is not dict:
                raise ServerError(f"unreadable stream info for bucket {self.bucket!r}")
            error = info.get("error")
            if type(error) is dict:
                with map_nats_errors(bucket=self.bucket, subject=subject):
                    js_errors.APIError.from_error({"code": 0, **error})
            state = info.get("state") or {}
            page = sorted((state.get("subjects") or {}).keys())
            if previous_last is not None and page and page[0] > previous_last and offset > 0:
                offset = max(0, offset - back)  # shifted past what we saw: look further back
                back *= 2
                continue
            found.update(page)
            last_seq = max(last_seq, int(state.get("last_seq") or 0))
            total = int(info.get("total") or 0)
            end = int(info.get("offset") or 0) + len(page)
            if not page or end >= total:
                return found, last_seq
            previous_last = page[-1]
            back = _PAGE_OVERLAP
            offset = max(0, end - back)

    async def history(self, key: str) -> list[Change[T]]:
        """Every retained change of ``key``, oldest first (``history=`` of the bucket)."""
        self._check_key(key)
        return [self._change_from_msg(m) for m in await self._scan(key, api.DeliverPolicy.ALL)]

    async def _scan(
        self,
        pattern: str,
        policy: api.DeliverPolicy,
        *,
        headers_only: bool = False,
        until: int | None = None,
    ) -> list[Msg]:
        """Read what matches ``pattern`` up to now (or up to stream sequence ``until``)
        through a short-lived ordered consumer."""
        subject = self._prefix + pattern
        js = self._client.js
        msgs: list[Msg] = []
        with map_nats_errors(bucket=self.bucket, subject=subject):
            sub = await js.subscribe(
                subject,
                stream=self._stream,
                ordered_consumer=True,
                deliver_policy=policy,
                headers_only=headers_only,
                inactive_threshold=30.0,
            )
            try:
                info = await sub.consumer_info()
                # Nothing to read only if the server has nothing pending *and* delivered
                # nothing yet: messages it already pushed may still be in flight to us.
                delivered = info.delivered.consumer_seq if info.delivered else 0
                if info.num_pending == 0 and not delivered:
                    return msgs
                while True:
                    msg = await sub.next_msg(timeout=self._client.timeout)
                    msgs.append(msg)
                    if msg.metadata.num_pending == 0:
                        return msgs
                    if until is not None and msg.metadata.sequence.stream >= until:
                        return msgs
            finally:
                await _close_subscription(self, sub)

    # -- writes ----------------------------------------------------------------------------

    async def put(self, key: str, value: T, *, ttl: float | None = None) -> Entry[T]:
        """Write ``value`` unconditionally; returns the new entry. ``ttl`` expires this key."""
        self._check_key(key)
        data = self._encode(key, value)
        revision = await self._publish(key, data, ttl=ttl)
        self._remember(key, _Raw(revision, data))
        return Entry(key, value, revision)

    async def create(self, key: str, value: T, *, ttl: float | None = None) -> Entry[T]:
        """Write ``value`` only if ``key`` is absent (or deleted); else :class:`KeyExistsError`."""
        self._check_key(key)
        data = self._encode(key, value)
        # A key this store saw deleted sits on a delete marker: expect that revision first.
        cached = self._cache.get(key)
        expected = cached.revision if cached is not None and cached.data is None else 0
        try:
            revision = await self._publish(key, data, expected=expected, ttl=ttl)
        except ConflictError:
            raw = await self._read(key)
            if raw.data is not None:
                raise KeyExistsError(self.bucket, key, raw.revision) from None
            try:  # the last entry is a delete marker: create over it
                revision = await self._publish(key, data, expected=raw.revision, ttl=ttl)
            except ConflictError:
                raise KeyExistsError(self.bucket, key) from None
        self._remember(key, _Raw(revision, data))
        return Entry(key, value, revision)

    async def compare_and_set(
        self, key: str, value: T, revision: int, *, ttl: float | None = None
    ) -> Entry[T]:
        """Write ``value`` only if the latest revision of ``key`` is ``revision`` (0: absent).

        Raises :class:`ConflictError` at once when it is not; no retry.
        """
        self._check_key(key)
        if type(revision) is not int or revision < 0:
            count("revision", revision, minimum=0)
        data = self._encode(key, value)
        new_revision = await self._publish(key, data, expected=revision, ttl=ttl)
        self._remember(key, _Raw(new_revision, data))
        return Entry(key, value, new_revision)

    async def delete(self, key: str, revision: int | None = None) -> None:
        """Delete ``key`` (a delete marker; history is kept).

        With ``revision``, only if that is still the latest revision, else :class:`ConflictError`.
        """
        self._check_key(key)
        if revision is not None:
            count("revision", revision, minimum=0)
        new = await self._publish(key, b"", expected=revision, headers={_KV_OP: "DEL"})
        self._remember(key, _Raw(new, None))

    async def purge(self, key: str) -> None:
        """Delete ``key`` and every retained revision of it."""
        self._check_key(key)
        new = await self._publish(key, b"", headers={_KV_OP: "PURGE", _ROLLUP: "sub"})
        self._remember(key, _Raw(new, None))

    async def reset(self, key: str) -> Entry[T]:
        """Write the empty value ``T()`` with the same compare-and-set loop as :meth:`update`."""
        return await self.update(key, lambda _: self.codec.new())

    async def update(
        self, key: str, fn: Callable[[T], T | None], *, ttl: float | None = None
    ) -> Entry[T]:
        """Apply ``fn`` to the current value and write the result with compare-and-set.

        ``fn`` receives ``T()`` when the key is absent; it may mutate its argument in place and
        return ``None``, or return a new value. It must be pure and quick: it runs again on a
        conflict. Concurrent calls on one key in this process are combined and applied in
        arrival order; one whose ``fn`` raises gets that exception, the others are unaffected.
        After the retry budget (:class:`RetryPolicy`) runs out, raises :class:`ConflictError`.
        A cancelled caller's ``fn`` is not applied unless its write was already under way.

        In a combined write, each caller's entry holds the state right after its own ``fn``
        but the revision of the one write that stored the whole batch (whose value is the
        last caller's): order by it, but do not use it as the base of a compare-and-set.
        """
        self._check_key(key)
        if not callable(fn):
            raise ConfigError(f"update() needs a callable, got {type(fn).__name__}")
        if ttl is not None:
            _ttl_header(ttl)
        if self._closed:
            raise JsflowError(f"store {self.bucket!r} is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Entry[T]] = loop.create_future()
        pending = _Pending(fn, future, ttl)
        slot = self._slots.get(key)
        if slot is not None:  # another update of this key is in flight: join the queue
            slot.pending.append(pending)
            if slot.task is None:
                slot.task = self._spawn(self._drain(key, slot))
            # Cancelling this caller cancels ``future``: a batch not yet applied skips it.
            return await future
        slot = self._slots[key] = _Slot(pending=[pending])
        slot.task = asyncio.current_task()  # marks the key busy while this caller works
        try:
            # Callers woken in the same loop turn (say, by the previous batch) join here.
            await asyncio.sleep(0)
            if len(slot.pending) > 1:
                slot.task = self._spawn(self._drain(key, slot))
                return await future
            # Alone: write in the caller's own task, one round trip when the cache is fresh.
            slot.pending.clear()
            await self._apply_batch(key, [pending], ttl)
        except asyncio.CancelledError:
            # Still queued (cancelled in the sleep above): the drain must not apply it later.
            future.cancel()
            raise
        finally:
            if slot.task is asyncio.current_task():
                slot.task = None
                if slot.pending:
                    slot.task = self._spawn(self._drain(key, slot))
                elif self._slots.get(key) is slot:
                    del self._slots[key]
        return future.result()

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _drain(self, key: str, slot: _Slot[T]) -> None:
        try:
            while slot.pending:
                # Callers cancelled while queued (their future is cancelled) are skipped.
                slot.pending[:] = [op for op in slot.pending if not op.future.done()]
                if not slot.pending:
                    break
                ttl = slot.pending[0].ttl
                n = 1
                while n < len(slot.pending) and slot.pending[n].ttl == ttl:
                    n += 1
                batch, slot.pending[:n] = slot.pending[:n], []
                try:
                    await self._apply_batch(key, batch, ttl)
                except BaseException as exc:
                    for op in batch:
                        if not op.future.done():
                            if isinstance(exc, asyncio.CancelledError):
                                op.future.cancel()
                            else:
                                op.future.set_exception(exc)
                    if isinstance(exc, asyncio.CancelledError):
                        raise
        finally:
            slot.task = None
            if slot.pending:  # cancelled with work queued: fail it rather than hang
                for op in slot.pending:
                    if not op.future.done():
                        op.future.cancel()
                slot.pending.clear()
            if self._slots.get(key) is slot:
                del self._slots[key]

    def _apply(
        self, key: str, raw: _Raw, batch: list[_Pending[T]]
    ) -> tuple[T | None, list[T | BaseException]]:
        state = self._decode(key, raw) if raw.data is not None else self.codec.new()
        outcomes: list[T | BaseException] = []
        last_ok: T | None = None
        single = len(batch) == 1
        for op in batch:
            if op.future.done():  # its caller was cancelled meanwhile: do not apply its fn
                outcomes.append(asyncio.CancelledError())
                continue
            candidate = state if single else copy.deepcopy(state)
            try:
                result = op.fn(candidate)
                if inspect.isawaitable(result):
                    if inspect.iscoroutine(result):
                        result.close()
                    raise ConfigError("update() fn must be a plain function, not async")
                if result is not None and not _same_kind(result, candidate):
                    raise CodecError(
                        f"update() fn returned {type(result).__name__}; it must change its "
                        f"argument in place and return None, or return a new "
                        f"{type(candidate).__name__}",
                        bucket=self.bucket,
                        key=key,
                    )
            except Exception as exc:
                outcomes.append(exc)
                continue
            state = candidate if result is None else result
            outcomes.append(state)
            last_ok = state
        return last_ok, outcomes

    async def _attempt(
        self, key: str, batch: list[_Pending[T]], ttl: float | None, base: _Raw, from_cache: bool
    ) -> None:
        """Apply the batch to ``base`` and compare-and-set it; settles every future or raises."""
        last_ok, outcomes = self._apply(key, base, batch)
        revision = base.revision
        if last_ok is not None:  # else every fn raised: nothing to write
            data = self._encode(key, last_ok)
            try:
                revision = await self._publish(key, data, expected=base.revision, ttl=ttl)
            except ConflictError:
                self._cache.pop(key, None)
                raise _Conflict(from_cache, base.revision) from None
            self._remember(key, _Raw(revision, data))
        for op, outcome in zip(batch, outcomes, strict=True):
            if op.future.done():  # cancelled while the write was in flight
                continue
            if isinstance(outcome, BaseException):
                op.future.set_exception(outcome)
            else:
                op.future.set_result(Entry(key, outcome, revision))

    async def _apply_batch(self, key: str, batch: list[_Pending[T]], ttl: float | None) -> None:
        policy = self.retry
        started = time.monotonic()
        with tracer().start_as_current_span("jsflow.store.update") as span:
            span.set_attribute("jsflow.bucket", self.bucket)
            span.set_attribute("jsflow.key", key)
            span.set_attribute("jsflow.batch_size", len(batch))
            cached = self._cache.get(key)
            try:  # first attempt outside tenacity: the common, uncontended case
                base = cached if cached is not None else await self._read(key)
                await self._attempt(key, batch, ttl, base, from_cache=cached is not None)
                span.set_attribute("jsflow.attempts", 1)
                span.set_attribute("jsflow.conflicts", 0)
                return
            except _Conflict as exc:
                first = exc
                conflict: _Conflict | None = exc
            attempts = 1
            if policy.attempts > 1 and time.monotonic() - started < policy.deadline:
                if not first.from_cache:  # real contention: back off before re-reading
                    await asyncio.sleep(random.uniform(0, policy.initial_backoff))

                def wait(state: RetryCallState) -> float:
                    cap = policy.initial_backoff * (2**state.attempt_number)
                    return random.uniform(0, min(policy.max_backoff, cap))

                retrying = AsyncRetrying(
                    stop=stop_after_attempt(policy.attempts - 1)
                    | stop_after_delay(max(0.0, policy.deadline - (time.monotonic() - started))),
                    wait=wait,
                    retry=retry_if_exception_type(_Conflict),
                    reraise=True,
                )
                try:
                    async for attempt in retrying:
                        with attempt:
                            attempts += 1
                            base = await self._read(key)
                            await self._attempt(key, batch, ttl, base, from_cache=False)
                    conflict = None
                except _Conflict as last:
                    conflict = last
            span.set_attribute("jsflow.attempts", attempts)
            span.set_attribute("jsflow.conflicts", attempts - (0 if conflict else 1))
            if conflict is not None:
                _log.debug(
                    "store.update.gave_up",
                    bucket=self.bucket,
                    key=key,
                    attempts=attempts,
                    seconds=round(time.monotonic() - started, 3),
                )
                raise ConflictError(self.bucket, key, attempts=attempts, revision=conflict.revision)
            _log.debug(
                "store.update.retried",
                bucket=self.bucket,
                key=key,
                attempts=attempts,
                batch=len(batch),
            )

    # -- watching --------------------------------------------------------------------------

    def watch(
        self,
        key_or_pattern: str = ">",
        *,
        include_history: bool = False,
        updates_only: bool = False,
    ) -> Watch[T]:
        """Changes of keys matching ``key_or_pattern``, as an async iterator.

        By default it first yields the latest value of each matching key, then every change
        as it happens; ``include_history`` replays all retained revisions first, and
        ``updates_only`` skips the initial values. It survives reconnects and server restarts
        without losing or repeating a change. Use ``async with`` (or ``aclose()``) to stop.
        Once its client closes, or its connection closes for good, iterating raises
        :class:`jsflow.ConnectionClosedError` (within about a second).
        """
        validate_pattern(key_or_pattern)
        if include_history and updates_only:
            raise ConfigError("include_history and updates_only exclude each other")
        if include_history:
            policy = api.DeliverPolicy.ALL
        elif updates_only:
            policy = api.DeliverPolicy.NEW
        else:
            policy = api.DeliverPolicy.LAST_PER_SUBJECT
        return Watch(self, key_or_pattern, policy)

    async def listen(self, key: str) -> KeyListener[T]:
        """Register for changes of ``key`` on the store's one shared watch of the bucket.

        Every listener of every key in this store shares a single server-side consumer, so
        10,000 waiters cost the server what one does. Register *before* reading the state you
        wait on, then ``await listener.wait()``; close with ``listener.close()``.
        """
        self._check_key(key)
        if self._closed:
            raise JsflowError(f"store {self.bucket!r} is closed")
        hub = await self._ensure_hub()
        return hub.add(key)

    async def _ensure_hub(self) -> _ListenerHub[T]:
        if self._hub is not None and self._hub.alive:
            return self._hub
        async with self._hub_lock:
            if self._hub is None or not self._hub.alive:
                hub: _ListenerHub[T] = _ListenerHub(self)
                await hub.start()
                self._hub = hub
        return self._hub

    def _change_from_msg(self, msg: Msg) -> Change[T]:
        key = msg.subject[len(self._prefix) :]
        revision = int(msg.metadata.sequence.stream)
        op = _op_of(msg.headers)
        value: T | None = None
        if op is Op.PUT:
            value = self._decode(key, _Raw(revision, msg.data))
        return Change(key, value, revision, op)

    @property
    def closed(self) -> bool:
        """Whether :meth:`aclose` was called; a closed store accepts no more work."""
        return self._closed

    async def aclose(self) -> None:
        """Stop the shared watch and wait for in-flight combined updates."""
        self._closed = True
        self._client.off_close(self)
        if self._hub is not None:
            await self._hub.stop()
            self._hub = None
        while self._tasks:  # a caller finishing its own write may still hand a queue over
            await asyncio.gather(*list(self._tasks), return_exceptions=True)


async def _ordered_subscribe(
    store: ObjectStore[Any],
    subject: str,
    policy: api.DeliverPolicy,
    cb: Callable[[Msg], Any],
    *,
    start_seq: int | None = None,
) -> Any:
    """An ordered push consumer with heartbeats: nats-py re-creates it after a gap or restart.

    With ``start_seq`` it starts there (``BY_START_SEQUENCE``), and nats-py is told that the
    sequence before it was seen, so that its own recovery (after two missed heartbeats)
    resumes from there rather than replaying the stream from its first message.
    """
    config = api.ConsumerConfig(
        deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE if start_seq else policy,
        opt_start_seq=start_seq,
        inactive_threshold=300.0,
    )
    with map_nats_errors(bucket=store.bucket, subject=subject):
        sub = await store._client.js.subscribe(
            subject,
            stream=store._stream,
            cb=cb,
            ordered_consumer=True,
            idle_heartbeat=1.0,
            config=config,
            deliver_policy=None if start_seq else policy,
        )
    jsi = getattr(getattr(sub, "_sub", None), "_jsi", None)
    if start_seq and jsi is not None and getattr(jsi, "_sseq", None) == 0:
        jsi._sseq = start_seq - 1
    return sub


async def _close_subscription(store: ObjectStore[Any], sub: Any) -> None:
    """Unsubscribe and delete the (ordered, ephemeral) consumer behind ``sub``.

    Unsubscribing alone leaves the consumer on the server until its inactive threshold
    passes; consumers are scarce, so delete it now (best effort: it may already be gone).
    """
    with contextlib.suppress(Exception):
        await sub.unsubscribe()
    name = getattr(sub, "_consumer", None)
    if name and not store._client.nc.is_closed:
        with contextlib.suppress(Exception):
            await store._client.js.delete_consumer(store._stream, name)


# -- reconnects ---------------------------------------------------------------------------

_RESUME_ATTEMPTS = 10
_RESUME_MAX_BACKOFF = 1.0
# How often a running feed checks (locally, no I/O) whether its connection closed for good:
# nats-py ends no subscription then, so a waiting iterator would wait forever.
_CLOSED_CHECK = 0.5


class _ReconnectRelay:
    """Tells the ordered feeds (watches, listener hubs) of one client that it reconnected.

    One per :class:`jsflow.Connection`, created on first use. It holds its feeds weakly; each
    feed registers while it runs and unregisters when it stops.
    """

    def __init__(self) -> None:
        self._feeds: weakref.WeakSet[_OrderedFeed] = weakref.WeakSet()

    def add(self, feed: _OrderedFeed) -> None:
        self._feeds.add(feed)

    def discard(self, feed: _OrderedFeed) -> None:
        self._feeds.discard(feed)

    def fire(self) -> None:
        """Called once the connection is back: every live feed re-creates its consumer."""
        for feed in list(self._feeds):
            feed._reconnected()


def _reconnect_relay(client: Connection) -> _ReconnectRelay:
    """The client's relay, hooked to its reconnects the first time it is asked for.

    Registered through :meth:`Connection.on_reconnect`.
    """

    def make() -> _ReconnectRelay:
        relay = _ReconnectRelay()
        client.on_reconnect(relay.fire)
        return relay

    return client.shared(_ReconnectRelay, make)


class _FeedCloser:
    """Registered with :meth:`Connection.on_close` for a running feed: the client's close ends
    the feed with :class:`ConnectionClosedError` (before the connection goes)."""

    __slots__ = ("_feed",)

    def __init__(self, feed: _OrderedFeed) -> None:
        self._feed = feed

    async def aclose(self) -> None:
        feed = self._feed
        feed._fail(ConnectionClosedError(f"the client closed ({feed._subject})"))
        await feed._close_feed()


class _OrderedFeed:
    """An ordered consumer on ``subject`` that resumes promptly, exactly where it left off.

    nats-py re-creates an ordered consumer only after two missed idle heartbeats (2-4 s
    after a server restart). A feed also listens for the client's reconnects and then, at
    once, creates a consumer starting after the last revision it delivered (with bounded,
    jittered retries while JetStream recovers) and drops the old one. Revisions at or below
    the last delivered are skipped, so however the consumers overlap, each change is
    delivered once and in order. A feed with ``DeliverPolicy.NEW`` notes where its consumer
    started, so that nothing written after that is missed or replayed either.

    A feed ends with :class:`ConnectionClosedError` (:meth:`_fail`) when its client closes
    or its connection closes for good (checked every ``_CLOSED_CHECK`` seconds by a timer,
    not a task).
    """

    def __init__(self, store: ObjectStore[Any], subject: str, policy: api.DeliverPolicy) -> None:
        self._store = store
        self._subject = subject
        self._policy = policy
        self._sub: Any = None
        self._last = 0
        self._closed = False
        self._resume_task: asyncio.Task[None] | None = None
        self._resume_again = False
        self._floor_known = False
        self._closer = _FeedCloser(self)
        self._watchdog: asyncio.TimerHandle | None = None
        self._failure: ConnectionClosedError | None = None

    async def _on_msg(self, msg: Msg) -> None:
        raise NotImplementedError

    def _failed(self, exc: ConnectionClosedError) -> None:
        """What a subclass does when the feed ends for good (wake its waiters with ``exc``)."""
        raise NotImplementedError

    def _fail(self, exc: ConnectionClosedError) -> None:
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
        if not self._store._client.nc.is_closed:
            self._arm_watchdog()
            return
        self._fail(ConnectionClosedError(f"the connection is closed ({self._subject})"))
        # Nothing to tell the server any more: forget the subscription here, synchronously.
        self._closed = True
        self._forget()
        self._sub = None

    def _resume_from(self) -> int | None:
        """Where a new consumer starts: after the last revision seen (``None``: the policy)."""
        if self._last or self._floor_known:
            return self._last + 1
        return None  # nothing delivered yet: the original policy loses nothing

    async def _open_feed(self) -> None:
        store = self._store
        sub = self._sub = await _ordered_subscribe(store, self._subject, self._policy, self._on_msg)
        _reconnect_relay(store._client).add(self)
        store._client.on_close(self._closer)
        if self._watchdog is None:
            self._arm_watchdog()
        if self._policy is api.DeliverPolicy.NEW:
            # A new consumer reports the stream's last sequence as delivered: everything
            # after it is this feed's to deliver, even across a reconnect before any change.
            try:
                with map_nats_errors(bucket=store.bucket):
                    info = await store._client.js.consumer_info(store._stream, sub._consumer)
                floor = int(info.delivered.stream_seq or 0) if info.delivered else 0
            except JsflowError as exc:  # best effort: resuming then uses the policy again
                _log.debug("store.feed.floor_unknown", bucket=store.bucket, error=repr(exc))
                return
            self._last = max(self._last, floor)
            self._floor_known = True
            jsi = getattr(getattr(sub, "_sub", None), "_jsi", None)
            if jsi is not None and getattr(jsi, "_sseq", None) == 0:
                jsi._sseq = self._last  # nats-py's own recovery resumes after it, too

    def _reconnected(self) -> None:
        if self._closed:
            return
        if self._resume_task is not None and not self._resume_task.done():
            self._resume_again = True  # reconnected again while resuming: go once more
            return
        self._resume_task = asyncio.get_running_loop().create_task(self._resume())

    async def _resume(self) -> None:
        store = self._store
        backoff = 0.05
        attempt = 0
        while not self._closed and attempt < _RESUME_ATTEMPTS:
            self._resume_again = False
            attempt += 1
            try:
                new = await _ordered_subscribe(
                    store, self._subject, self._policy, self._on_msg, start_seq=self._resume_from()
                )
            except JsflowError as exc:  # JetStream may still be recovering after a restart
                _log.debug(
                    "store.feed.resume_retry",
                    bucket=store.bucket,
                    subject=self._subject,
                    attempt=attempt,
                    error=repr(exc),
                )
                await asyncio.sleep(random.uniform(backoff / 2, backoff))
                backoff = min(_RESUME_MAX_BACKOFF, backoff * 2)
                continue
            old, self._sub = self._sub, new
            if self._closed:  # closed while subscribing: the close saw the old one only
                old, self._sub = new, None
            if old is not None:
                await _close_subscription(store, old)
            if not self._resume_again:
                _log.debug("store.feed.resumed", bucket=store.bucket, after=self._last)
                return
            attempt = 0  # another reconnect happened meanwhile: resume once more
        if not self._closed:
            # nats-py's heartbeat-driven recovery of the old consumer is still there.
            _log.warning("store.feed.resume_failed", bucket=store.bucket, subject=self._subject)

    def _forget(self) -> None:
        """Unhook from the client (relay, close hook, watchdog) and cancel a resume."""
        client = self._store._client
        _reconnect_relay(client).discard(self)
        client.off_close(self._closer)
        watchdog, self._watchdog = self._watchdog, None
        if watchdog is not None:
            watchdog.cancel()
        task = self._resume_task
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    async def _close_feed(self) -> None:
        self._closed = True
        self._forget()
        task, self._resume_task = self._resume_task, None
        if task is not None and task is not asyncio.current_task():
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        sub, self._sub = self._sub, None
        if sub is not None:
            await _close_subscription(self._store, sub)


class Watch(_OrderedFeed, Generic[T]):
    """Async iterator of :class:`Change` for a key or pattern (from :meth:`ObjectStore.watch`).

    Survives reconnects and server restarts: it resumes after the last change it delivered,
    without losing or repeating one (as long as the bucket's ``history`` still holds them).
    """

    def __init__(self, store: ObjectStore[T], pattern: str, policy: api.DeliverPolicy) -> None:
        super().__init__(store, store._prefix + pattern, policy)
        self._typed_store = store
        # ``None`` is put by :meth:`aclose` to end an iteration waiting in another task.
        self._queue: asyncio.Queue[Change[T] | BaseException | None] = asyncio.Queue()
        self._starting: asyncio.Lock | None = None

    async def _on_msg(self, msg: Msg) -> None:
        revision = int(msg.metadata.sequence.stream)
        if revision <= self._last:  # a consumer re-created after a reconnect may repeat
            return
        self._last = revision
        try:
            change = self._typed_store._change_from_msg(msg)
        except CodecError as exc:
            self._queue.put_nowait(exc)
            return
        self._queue.put_nowait(change)

    def _failed(self, exc: ConnectionClosedError) -> None:
        self._queue.put_nowait(exc)

    async def start(self) -> None:
        """Create the server-side consumer (done by the first ``__anext__`` otherwise)."""
        if self._sub is not None or self._closed:
            return
        if self._starting is None:
            self._starting = asyncio.Lock()
        async with self._starting:
            if self._sub is None and not self._closed:
                await self._open_feed()

    def __aiter__(self) -> Watch[T]:
        return self

    async def __anext__(self) -> Change[T]:
        """The next change; :class:`ConnectionClosedError` once the client or its connection
        closed, ``StopAsyncIteration`` after :meth:`aclose`."""
        if self._failure is not None:
            raise self._failure
        if self._closed:
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
        await self._close_feed()

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


class KeyListener(Generic[T]):
    """One waiter's view of a key's changes, fed by the store's shared watch.

    It keeps only the *latest* change: changes that arrive while nobody is waiting collapse
    into the newest one (``wait()`` then returns it at once). That suits waiters that
    re-read the state they wait on after each wake-up (locks, semaphores, wait groups, task
    results); to see every change of a key, use :meth:`ObjectStore.watch` instead. After a
    reconnect or server restart the shared watch resumes after the last change it saw, so
    a change made meanwhile still wakes the listener.
    """

    def __init__(self, hub: _ListenerHub[T], key: str) -> None:
        self._hub = hub
        self.key = key
        self._event = asyncio.Event()
        self._error: ConnectionClosedError | None = None
        self.latest: Change[T] | None = None

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


class _ListenerHub(_OrderedFeed, Generic[T]):
    """One ordered consumer on the whole bucket, dispatching changes to key listeners."""

    def __init__(self, store: ObjectStore[T]) -> None:
        super().__init__(store, store._prefix + ">", api.DeliverPolicy.NEW)
        self._typed_store = store
        self._listeners: dict[str, set[KeyListener[T]]] = {}
        self.alive = False

    async def start(self) -> None:
        await self._open_feed()
        self.alive = True

    async def _on_msg(self, msg: Msg) -> None:
        revision = int(msg.metadata.sequence.stream)
        if revision <= self._last:
            return
        self._last = revision
        store = self._typed_store
        key = msg.subject[len(store._prefix) :]
        listeners = self._listeners.get(key)
        if not listeners:
            return
        try:
            change = store._change_from_msg(msg)
        except CodecError:
            change = Change(key, None, revision, Op.PUT)
        for listener in list(listeners):
            listener._notify(change)

    def _failed(self, exc: ConnectionClosedError) -> None:
        self.alive = False
        for group in list(self._listeners.values()):
            for listener in list(group):
                listener._fail(exc)

    def add(self, key: str) -> KeyListener[T]:
        listener = KeyListener(self, key)
        self._listeners.setdefault(key, set()).add(listener)
        return listener

    def remove(self, listener: KeyListener[T]) -> None:
        group = self._listeners.get(listener.key)
        if group is not None:
            group.discard(listener)
            if not group:
                del self._listeners[listener.key]

    async def stop(self) -> None:
        self._fail(ConnectionClosedError(f"the store {self._typed_store.bucket!r} was closed"))
        self.alive = False
        await self._close_feed()


class _StoreCache:
    """Per connection: the open stores, so that one bucket, type and codec asked for twice
    is one store (and in-process combining spans every caller)."""

    def __init__(self) -> None:
        self.stores: dict[tuple[str, Any, int], ObjectStore[Any]] = {}
        self.locks: dict[str, asyncio.Lock] = {}


async def open_store(
    connection: Connection,
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
    """Create or bind the KV ``bucket`` holding values of type ``tp`` (idempotent); the
    one store of this connection for that bucket, type and codec. ``replicas`` defaults to
    the connection's. Closed with the connection. See :meth:`jsflow.Client.object_store`."""
    check_name("bucket", bucket)
    cache = connection.shared(_StoreCache, _StoreCache)
    cache_key = (bucket, tp, id(codec))
    store = cache.stores.get(cache_key)
    if store is not None and not store.closed:
        return store
    async with cache.locks.setdefault(bucket, asyncio.Lock()):
        store = cache.stores.get(cache_key)
        if store is None or store.closed:
            store = await ObjectStore.open(
                connection,
                bucket,
                tp,
                ttl=ttl,
                history=history,
                replicas=check_replicas(replicas, connection.replicas),
                codec=codec,
                max_value_size=max_value_size,
                retry=retry,
                cache_size=cache_size,
            )
            cache.stores[cache_key] = store
            connection.on_close(store)
    return store
