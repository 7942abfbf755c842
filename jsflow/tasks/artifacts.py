"""Large task arguments and results in the JetStream Object Store, referenced from messages.

nats-py's object-store ``get`` creates a consumer per call: fine for occasional large
payloads, which is all this is used for (never per waiter).

Artifacts follow their task's retention: :meth:`ArtifactStore.put` with ``ttl`` stamps every
chunk and the metadata message with a per-message TTL (``Nats-TTL``; the bucket's stream
allows it), so the server removes the object when its task's state expires, with no
janitor process.
"""

from __future__ import annotations

import asyncio
import math
from typing import TYPE_CHECKING, Any

from jsflow._js import api, js_errors, js_object_store, map_nats_errors
from jsflow.errors import CodecError, ConfigError
from jsflow.observability import tracer
from jsflow.tasks.streams import ARTIFACT_BUCKET

if TYPE_CHECKING:
    from jsflow.client import Client

__all__ = ["ArtifactStore"]

_REF_PREFIX = "obj:"


def ttl_header(ttl: float) -> str:
    """The ``Nats-TTL`` value for ``ttl`` seconds (a Go duration; the server's minimum is 1 s)."""
    if not ttl >= 1 or math.isinf(ttl):
        raise ConfigError(f"ttl must be at least 1 second (server minimum), got {ttl}")
    return f"{round(ttl * 1000)}ms"


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

    def __init__(self, client: Client, bucket: str = ARTIFACT_BUCKET) -> None:
        self._client = client
        self.bucket = bucket
        self._store: Any = None
        self._lock = asyncio.Lock()

    async def _open(self) -> Any:
        if self._store is not None:
            return self._store
        async with self._lock:
            if self._store is None:
                js = self._client.js
                with map_nats_errors(bucket=self.bucket):
                    try:
                        store = await js.object_store(self.bucket)
                    except js_errors.BucketNotFoundError:
                        store = await js.create_object_store(
                            self.bucket, config=api.ObjectStoreConfig(storage=api.StorageType.FILE)
                        )
                    info = await js.stream_info(self._stream)
                    if not info.config.allow_msg_ttl:  # can be turned on, never off
                        info.config.allow_msg_ttl = True
                        try:
                            await js.update_stream(info.config)
                        except js_errors.BadRequestError as exc:
                            if exc.err_code != 10058:
                                raise
                self._store = store
        return self._store

    @property
    def _stream(self) -> str:
        return f"OBJ_{self.bucket}"

    @staticmethod
    def is_ref(value: str) -> bool:
        """Whether ``value`` is an artifact reference."""
        return value.startswith(_REF_PREFIX)

    async def put(self, name: str, data: bytes, *, ttl: float | None = None) -> str:
        """Store ``data`` under ``name`` (replacing an older object of that name); returns the
        reference to carry in messages. With ``ttl`` (seconds, >= 1) the server removes the
        object that long after this write."""
        if not name:
            raise ConfigError("artifact name must not be empty")
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
                await store.put(name, data)
        return _REF_PREFIX + name

    async def expire(self, ref: str, ttl: float | None, data: bytes | None = None) -> None:
        """Rewrite the artifact ``ref`` so that it expires ``ttl`` seconds from now (``None``:
        never). ``data`` saves reading it back when the caller has it; a missing artifact is
        left missing."""
        if data is None:
            try:
                data = await self.get(ref)
            except CodecError:
                return
        await self.put(ref[len(_REF_PREFIX) :], data, ttl=ttl)

    async def get(self, ref: str) -> bytes:
        """The bytes a reference points at; :class:`CodecError` when it is missing."""
        if not self.is_ref(ref):
            raise ConfigError(f"not an artifact reference: {ref!r}")
        name = ref[len(_REF_PREFIX) :]
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
        """Remove the artifact a reference points at (no error when already gone)."""
        name = ref[len(_REF_PREFIX) :]
        store = await self._open()
        with map_nats_errors(bucket=self.bucket, key=name):
            try:
                await store.delete(name)
            except js_errors.NotFoundError:
                return
