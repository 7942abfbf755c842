"""The typed store, :class:`ObjectStore`: the one class users hold, composing the bucket,
the wire, the revision cache, the combining engine, watches and listeners."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Generic, TypeVar

import jsflow.store.listing as listing  # noqa: PLR0402 -- not via the package: no cycle
import jsflow.store.wire as wire  # noqa: PLR0402
from jsflow._js import api
from jsflow._validate import MAX_DURATION, check_name, count, number
from jsflow.codec import Codec, codec_for
from jsflow.connection import check_replicas
from jsflow.errors import ConfigError, ConflictError, JsflowError, KeyExistsError
from jsflow.keys import validate_key
from jsflow.observability import tracer
from jsflow.store.bucket import Bucket, create_or_bind
from jsflow.store.cache import RevisionCache
from jsflow.store.combining import Combiner
from jsflow.store.entries import EntryCodec
from jsflow.store.listeners import KeyListener, Listeners
from jsflow.store.values import BucketStatus, Change, Entry, Op, RetryPolicy, StoreOptions
from jsflow.store.watch import Watch

if TYPE_CHECKING:
    from jsflow.connection import Connection

__all__ = ["ObjectStore"]

T = TypeVar("T")


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
        self.bucket = bucket
        self.codec = codec
        self.retry = retry
        self._bucket = Bucket(client, bucket, leader_reads=leader_reads)
        self._entries = EntryCodec(self._bucket, codec, max_value_size)
        self._cache = RevisionCache(self._bucket, cache_size)
        self._combiner = Combiner(bucket, self._entries, self._cache, lambda: self.retry)
        self._listeners = Listeners(self._bucket, self._entries)
        self._closed = False

    @property
    def connection(self) -> Connection:
        """The connection this store works on."""
        return self._bucket.connection

    @classmethod
    async def open(
        cls,
        client: Connection,
        bucket: str,
        tp: type[T],
        options: StoreOptions[T] | None = None,
    ) -> ObjectStore[T]:
        """Create or bind ``bucket`` (idempotent); prefer :meth:`jsflow.Client.object_store`."""
        check_name("bucket", bucket)
        opts: StoreOptions[T] = options if options is not None else StoreOptions()
        resolved = codec_for(tp, opts.codec)
        server_max = int(client.nc.max_payload) - 1024  # room for headers
        max_size = opts.max_value_size
        limit = min(max_size, server_max) if max_size else server_max
        replicas = await create_or_bind(
            client,
            bucket,
            ttl=opts.ttl,
            history=opts.history,
            replicas=check_replicas(opts.replicas, client.replicas),
            max_value_size=max_size,
        )
        return cls(
            client,
            bucket,
            resolved,
            retry=opts.retry or RetryPolicy(),
            cache_size=opts.cache_size,
            max_value_size=limit,
            leader_reads=replicas > 1,
        )

    # -- low level -------------------------------------------------------------------------

    def _check_key(self, key: str) -> None:
        """:func:`validate_key`, skipped for keys in the cache (only valid keys get there)."""
        if type(key) is not str or key not in self._cache:
            validate_key(key)

    # -- reads -----------------------------------------------------------------------------

    async def get(self, key: str, *, revision: int | None = None) -> Entry[T] | None:
        """The current value of ``key``, or ``None`` when absent or deleted. With
        ``revision``, the value it had at that revision (``None`` when that revision is not
        one of this key's retained ones, or is a delete)."""
        self._check_key(key)
        if revision is not None:
            count("revision", revision, minimum=1)
            old = await wire.read_revision(self._bucket, key, revision)
            if old is None or old.data is None:
                return None
            return Entry(key, self._entries.decode(key, old), old.revision)
        with tracer().start_as_current_span("jsflow.store.get") as span:
            span.set_attribute("jsflow.bucket", self.bucket)
            span.set_attribute("jsflow.key", key)
            raw = await self._cache.read(key)
            if raw.data is None:
                return None
            return Entry(key, self._entries.decode(key, raw), raw.revision)

    async def keys(self, filter: str | Iterable[str] = ">") -> list[str]:
        """Keys matching ``filter`` whose latest entry is not a delete (sorted).

        ``filter`` is one key pattern (``*`` one token, ``>`` the rest) or a list of them
        (keys matching any; nats.go's ``ListKeysFiltered``): see :meth:`watch` for the rules.

        Every key that exists throughout the call is listed exactly once, however many
        writes other clients make meanwhile. Which keys exist comes from one server-side
        snapshot of the bucket's subjects (the stream info's subject map, no values read);
        deleted keys, whose last message is a delete marker, are then found by a
        headers-only scan of each key's last message up to that snapshot.
        """
        return await listing.keys(self._bucket, wire.filters(filter))

    async def entries(self, filter: str | Iterable[str] = ">") -> list[Entry[T]]:
        """The current entry of every key matching ``filter`` (one pattern or a list, as
        for :meth:`watch`; deleted keys left out), in the order they were last written.

        One server-side pass: a short-lived ordered consumer delivering the last message of
        each key, not one get per key. A write made during the call may or may not be in
        it; every key that holds a value throughout is listed once. A value that does not
        decode raises :class:`CodecError` naming its key and revision.
        """
        msgs = await listing.latest(self._bucket, wire.filters(filter))
        out: list[Entry[T]] = []
        for msg in msgs:
            change = self._entries.change(msg)
            if change.value is not None:
                out.append(Entry(change.key, change.value, change.revision))
        return out

    async def history(self, key: str) -> list[Change[T]]:
        """Every retained change of ``key``, oldest first (``history=`` of the bucket)."""
        self._check_key(key)
        msgs = await listing.scan(self._bucket, (key,), api.DeliverPolicy.ALL)
        return [self._entries.change(m) for m in msgs]

    # -- writes ----------------------------------------------------------------------------

    async def put(self, key: str, value: T, *, ttl: float | None = None) -> Entry[T]:
        """Write ``value`` unconditionally; returns the new entry. ``ttl`` expires this key."""
        self._check_key(key)
        data = self._entries.encode(key, value)
        revision = await self._cache.write(key, data, ttl=ttl)
        return Entry(key, value, revision)

    async def create(self, key: str, value: T, *, ttl: float | None = None) -> Entry[T]:
        """Write ``value`` only if ``key`` is absent (or deleted); else :class:`KeyExistsError`."""
        self._check_key(key)
        data = self._entries.encode(key, value)
        # A key this store saw deleted sits on a delete marker: expect that revision first.
        cached = self._cache.get(key)
        expected = cached.revision if cached is not None and cached.data is None else 0
        try:
            revision = await self._cache.write(key, data, expected=expected, ttl=ttl)
        except ConflictError:
            raw = await self._cache.read(key)
            if raw.data is not None:
                raise KeyExistsError(self.bucket, key, raw.revision) from None
            try:  # the last entry is a delete marker: create over it
                revision = await self._cache.write(key, data, expected=raw.revision, ttl=ttl)
            except ConflictError:
                raise KeyExistsError(self.bucket, key) from None
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
        data = self._entries.encode(key, value)
        new_revision = await self._cache.write(key, data, expected=revision, ttl=ttl)
        return Entry(key, value, new_revision)

    async def delete(self, key: str, revision: int | None = None) -> None:
        """Delete ``key`` (a delete marker; history is kept).

        With ``revision``, only if that is still the latest revision, else :class:`ConflictError`.
        """
        self._check_key(key)
        if revision is not None:
            count("revision", revision, minimum=0)
        await self._cache.write(key, None, expected=revision, headers=wire.DELETE)

    async def purge(self, key: str, revision: int | None = None) -> None:
        """Delete ``key`` and every retained revision of it; with ``revision``, only if
        that is still the latest revision, else :class:`ConflictError`."""
        self._check_key(key)
        if revision is not None:
            count("revision", revision, minimum=0)
        await self._cache.write(key, None, expected=revision, headers=wire.PURGE)

    async def purge_deletes(self, older_than: float = 30 * 60) -> int:
        """Clean up delete and purge markers (nats.go's ``PurgeDeletes``); returns how many
        keys had stored messages removed.

        For every key whose latest entry is a delete or purge marker (expiry markers
        included), a marker older than ``older_than`` seconds goes with the key's whole
        history (the key is gone from the server); a younger one stays, alone (the
        revisions before it go). ``older_than <= 0`` removes every marker. The markers come
        from one headers-only pass over the bucket; each purge is bounded by the marker's
        revision (a stream purge, nothing written), so a key written again meanwhile keeps
        its new value. Ages are measured against this machine's clock.
        """
        limit = number("older_than", older_than, maximum=MAX_DURATION)
        bucket = self._bucket
        markers = await listing.scan(
            bucket, (">",), api.DeliverPolicy.LAST_PER_SUBJECT, headers_only=True
        )
        now = time.time()
        cleaned = 0
        for msg in markers:
            if wire.op_of(msg.headers) is Op.PUT:
                continue
            key = bucket.key_of(msg.subject)
            revision = int(msg.metadata.sequence.stream)
            young = limit > 0 and now - msg.metadata.timestamp.timestamp() < limit
            removed = await wire.purge_before(bucket, key, revision if young else revision + 1)
            if not young:
                self._cache.forget(key)  # its marker is gone: creating it expects revision 0
            cleaned += removed > 0
        return cleaned

    async def status(self) -> BucketStatus:
        """What the server holds for this bucket now: values (messages, history included),
        bytes, keys, and its configuration (history, ttl, replicas)."""
        info = await listing.stream_info(self._bucket)
        config, state = info.get("config") or {}, info.get("state") or {}
        return BucketStatus(
            bucket=self.bucket,
            values=int(state.get("messages") or 0),
            bytes=int(state.get("bytes") or 0),
            keys=int(state.get("num_subjects") or 0),
            history=int(config.get("max_msgs_per_subject") or 1),
            ttl=config["max_age"] / 1e9 if config.get("max_age") else None,
            replicas=int(config.get("num_replicas") or 1),
        )

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
            wire.ttl_header(ttl)
        if self._closed:
            raise JsflowError(f"store {self.bucket!r} is closed")
        return await self._combiner.update(key, fn, ttl)

    # -- watching --------------------------------------------------------------------------

    def watch(
        self,
        key_or_pattern: str | Iterable[str] = ">",
        *,
        include_history: bool = False,
        updates_only: bool = False,
        ignore_deletes: bool = False,
        from_revision: int | None = None,
    ) -> Watch[T]:
        """Changes of keys matching ``key_or_pattern``, as an async iterator.

        ``key_or_pattern`` is a key, a pattern (``*`` one token, ``>`` the rest), or a list
        of them: changes of keys matching any, each once, in revision order, on one
        server-side consumer (its multi-subject filter; nats.go's ``WatchFiltered``). Each
        pattern is validated before any I/O (:class:`InvalidKeyError` naming it); an empty
        list or more than 1,000 patterns raise :class:`ConfigError`. Duplicates and patterns
        another covers (``a.b`` beside ``a.>``) are dropped. Patterns that overlap without
        one covering the other (``a.*`` and ``*.a``) need a recent nats-server (the one
        jsflow ships takes them); older ones refuse them (:class:`ServerError`, code 10138).

        By default it first yields the latest value of each matching key, then every change
        as it happens; ``include_history`` replays all retained revisions first, and
        ``updates_only`` skips the initial values; ``from_revision`` starts at that
        revision of the bucket (every change since, e.g. to resume a watch kept elsewhere),
        and ``ignore_deletes`` leaves deletes and purges out. ``watch.caught_up`` turns true
        once every change that was there when it started has been yielded (the "initial
        values done" marker). It survives reconnects and
        server restarts
        without losing or repeating a change. Use ``async with`` (or ``aclose()``) to stop.
        Once its client closes, or its connection closes for good, iterating raises
        :class:`jsflow.ConnectionClosedError` (within about a second).
        """
        patterns = wire.filters(key_or_pattern, name="key_or_pattern")
        if sum((include_history, updates_only, from_revision is not None)) > 1:
            raise ConfigError("include_history, updates_only and from_revision exclude each other")
        start = None
        if from_revision is not None:
            start = count("from_revision", from_revision, minimum=1)
            policy = api.DeliverPolicy.BY_START_SEQUENCE
        elif include_history:
            policy = api.DeliverPolicy.ALL
        elif updates_only:
            policy = api.DeliverPolicy.NEW
        else:
            policy = api.DeliverPolicy.LAST_PER_SUBJECT
        return Watch(
            self._bucket,
            self._entries,
            patterns,
            policy,
            ignore_deletes=ignore_deletes,
            start_seq=start,
        )

    async def listen(self, key: str) -> KeyListener[T]:
        """Register for changes of ``key`` on the store's one shared watch of the bucket.

        Every listener of every key in this store shares a single server-side consumer, so
        10,000 waiters cost the server what one does. Register *before* reading the state you
        wait on, then ``await listener.wait()``; close with ``listener.close()``.
        """
        self._check_key(key)
        if self._closed:
            raise JsflowError(f"store {self.bucket!r} is closed")
        return await self._listeners.add(key)

    def listened_keys(self) -> frozenset[str]:
        """The keys that have an open :class:`KeyListener` now (for tests and diagnostics)."""
        hub = self._listeners.hub
        return hub.keys() if hub is not None else frozenset()

    @property
    def shared_watch_resumes(self) -> int:
        """How many times the shared watch of :meth:`listen` re-created its consumer after a
        reconnect, since it started (for tests and diagnostics; 0 while there is none)."""
        hub = self._listeners.hub
        return hub.resumes if hub is not None else 0

    @property
    def closed(self) -> bool:
        """Whether :meth:`aclose` was called; a closed store accepts no more work."""
        return self._closed

    async def aclose(self) -> None:
        """Stop the shared watch and wait for in-flight combined updates."""
        self._closed = True
        self.connection.off_close(self)
        await self._listeners.stop()
        await self._combiner.aclose()
