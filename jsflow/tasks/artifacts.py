"""Large task arguments and results in the JetStream Object Store, referenced from messages.

nats-py's object-store ``get`` creates a consumer per call: fine for occasional large
payloads, which is all this is used for (never per waiter).

Artifacts follow their task's retention: :meth:`ArtifactStore.put` with ``ttl`` stamps every
chunk and the metadata message with a per-message TTL (``Nats-TTL``; the bucket's stream
allows it), so the server removes the object when its task's state expires, with no
janitor process.

Whatever travels inline must fit one message: :meth:`ArtifactStore.inline_limit` caps the
configured threshold at the server's ``max_payload`` less room for the headers and the
rest of the task state around the payload, and chunks are cut to fit ``max_payload`` too,
so a server with a small ``max_payload`` sends more payloads to the object store instead of
refusing them. References are checked names (``check_id``): one read from a message header
never becomes a subject unchecked.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from jsflow._js import (
    api,
    codes,
    headers,
    js_errors,
    js_object_store,
    map_nats_errors,
    streams,
)
from jsflow._validate import check_id, duration, shorten
from jsflow.connection import check_replicas
from jsflow.errors import CodecError, InvalidNameError
from jsflow.observability import tracer
from jsflow.tasks.streams import ARTIFACT_BUCKET

if TYPE_CHECKING:
    from jsflow.client import Client

__all__ = ["ArtifactStore"]

_REF_PREFIX = "obj:"
# An inline payload lives in the task state, a KV value the store caps at max_payload less
# 1 KiB for headers, beside the state's other fields (ids, name, times, dependencies), and
# the arguments and the result of one task are both in it: each gets half of what is left.
_STORE_HEADROOM = 1024
_STATE_ROOM = 512
# Room beside one object-store chunk (its Nats-TTL header, the publish's own headers).
_CHUNK_HEADROOM = 256
_DEFAULT_CHUNK = 128 * 1024  # nats-py's default chunk size


def ttl_header(ttl: float) -> str:
    """The ``Nats-TTL`` value for ``ttl`` seconds (a Go duration; the server's minimum is 1 s)."""
    # whole seconds, rounded up: never expires early
    return headers.ttl_value(duration("ttl", ttl, minimum=1.0, positive=False))


class _TTLPublisher:
    """The JetStream context as nats-py's object store sees it, with every publish carrying
    a ``Nats-TTL`` header (chunks and metadata of one ``put``)."""

    def __init__(self, js: Any, ttl: str) -> None:
        self._js = js
        self._ttl = ttl

    def __getattr__(self, name: str) -> Any:
        return getattr(self._js, name)

    async def publish(
        self, subject: str, payload: bytes = b"", headers: dict[str, str] | None = None, **kw: Any
    ) -> Any:
        return await self._js.publish(
            subject, payload, headers={**(headers or {}), "Nats-TTL": self._ttl}, **kw
        )


class ArtifactStore:
    """Puts and gets byte payloads in the ``jsflow_artifacts`` object-store bucket."""

    def __init__(
        self, client: Client, bucket: str = ARTIFACT_BUCKET, *, replicas: int | None = None
    ) -> None:
        self._client = client
        self.bucket = bucket
        self.replicas = check_replicas(replicas, client.replicas)
        self._store: Any = None
        self._lock = asyncio.Lock()

    async def _open(self) -> Any:
        if self._store is not None:
            return self._store
        async with self._lock:
            if self._store is None:
                js = self._client.js
                # The object store's stream, created (or bound and checked) in the one place
                # streams are made; per-message TTLs expire artifacts with their task.
                config = api.StreamConfig(
                    name=self._stream,
                    subjects=[f"$O.{self.bucket}.C.>", f"$O.{self.bucket}.M.>"],
                    storage=api.StorageType.FILE,
                    num_replicas=self.replicas,
                    discard=api.DiscardPolicy.NEW,
                    allow_rollup_hdrs=True,
                    allow_direct=True,
                    allow_msg_ttl=True,
                )
                info, _ = await streams.create_or_bind(js, config, timeout=self._client.timeout)
                with map_nats_errors(bucket=self.bucket):
                    if not info.config.allow_msg_ttl:  # can be turned on, never off
                        info.config.allow_msg_ttl = True
                        try:
                            await js.update_stream(info.config)
                        except js_errors.BadRequestError as exc:
                            if exc.err_code != codes.STREAM_NAME_IN_USE:
                                raise
                    store = await js.object_store(self.bucket)
                self._store = store
        return self._store

    @property
    def _stream(self) -> str:
        return f"OBJ_{self.bucket}"

    @staticmethod
    def is_ref(value: str) -> bool:
        """Whether ``value`` is an artifact reference."""
        return isinstance(value, str) and value.startswith(_REF_PREFIX)

    def inline_limit(self, threshold: int) -> int:
        """The largest payload to carry inline: ``threshold``, capped so that a task state
        holding its arguments and its result inline still fits this server's
        ``max_payload`` with its headers (read at each use: a reconnect may land on a server
        with another limit). Larger payloads go to the object store."""
        max_payload = int(self._client.nc.max_payload or 0)
        if max_payload <= 0:  # not connected yet: nothing known to cap it by
            return threshold
        return max(1, min(threshold, (max_payload - _STORE_HEADROOM - _STATE_ROOM) // 2))

    def _chunk_size(self) -> int:
        max_payload = int(self._client.nc.max_payload or 0)
        if max_payload <= 0:
            return _DEFAULT_CHUNK
        return max(1, min(_DEFAULT_CHUNK, max_payload - min(_CHUNK_HEADROOM, max_payload // 2)))

    def _name_of(self, ref: str) -> str:
        """The object name ``ref`` points at; :class:`CodecError` when it is not a legal
        reference (it may come from a message header: the payload cannot be resolved)."""
        if not self.is_ref(ref):
            raise CodecError(f"not an artifact reference: {shorten(ref)}", bucket=self.bucket)
        try:
            return check_id("artifact name", ref[len(_REF_PREFIX) :])
        except InvalidNameError as exc:
            raise CodecError(f"illegal artifact reference: {exc}", bucket=self.bucket) from exc

    async def put(self, name: str, data: bytes, *, ttl: float | None = None) -> str:
        """Store ``data`` under ``name`` (replacing an older object of that name); returns the
        reference to carry in messages. With ``ttl`` (seconds, >= 1) the server removes the
        object that long after this write."""
        check_id("artifact name", name)
        header = ttl_header(ttl) if ttl is not None else None
        store = await self._open()
        if header is not None:
            store = js_object_store.ObjectStore(
                name=self.bucket,
                stream=self._stream,
                js=_TTLPublisher(self._client.js, header),  # type: ignore[arg-type]
            )
        with tracer().start_as_current_span("jsflow.tasks.artifact.put") as span:
            span.set_attribute("jsflow.artifact", name)
            span.set_attribute("jsflow.size", len(data))
            with map_nats_errors(bucket=self.bucket, key=name):
                meta = api.ObjectMeta(
                    name=name, options=api.ObjectMetaOptions(max_chunk_size=self._chunk_size())
                )
                await store.put(name, data, meta=meta)
        return _REF_PREFIX + name

    async def expire(self, ref: str, ttl: float | None, data: bytes | None = None) -> None:
        """Rewrite the artifact ``ref`` so that it expires ``ttl`` seconds from now (``None``:
        never). ``data`` saves reading it back when the caller has it; a missing artifact (or
        an illegal reference) is left as it is."""
        try:
            name = self._name_of(ref)
        except CodecError:
            return
        if data is None:
            try:
                data = await self.get(ref)
            except CodecError:
                return
        await self.put(name, data, ttl=ttl)

    async def get(self, ref: str) -> bytes:
        """The bytes a reference points at; :class:`CodecError` when it is missing or is not
        a legal reference (checked before any I/O)."""
        name = self._name_of(ref)
        store = await self._open()
        with (
            tracer().start_as_current_span("jsflow.tasks.artifact.get"),
            map_nats_errors(bucket=self.bucket, key=name),
        ):
            try:
                result = await store.get(name)
            except js_errors.ObjectNotFoundError as exc:
                raise CodecError(f"artifact {name!r} is missing", bucket=self.bucket) from exc
        return bytes(result.data or b"")

    async def delete(self, ref: str) -> None:
        """Remove the artifact a reference points at (no error when already gone, or when
        ``ref`` is not a legal reference: no such artifact can exist)."""
        try:
            name = self._name_of(ref)
        except CodecError:
            return
        store = await self._open()
        with map_nats_errors(bucket=self.bucket, key=name):
            try:
                await store.delete(name)
            except js_errors.NotFoundError:
                return
