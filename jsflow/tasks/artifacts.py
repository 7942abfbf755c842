"""Large task arguments and results in the JetStream Object Store, referenced from messages.

nats-py's object-store ``get`` creates a consumer per call: fine for occasional large
payloads, which is all this is used for (never per waiter).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import nats.js.errors
from nats.js import api

from jsflow.errors import CodecError, ConfigError, map_nats_errors
from jsflow.observability import tracer
from jsflow.tasks.streams import ARTIFACT_BUCKET

if TYPE_CHECKING:
    from jsflow.client import Client

__all__ = ["ArtifactStore"]

_REF_PREFIX = "obj:"


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
                        self._store = await js.object_store(self.bucket)
                    except nats.js.errors.BucketNotFoundError:
                        self._store = await js.create_object_store(
                            self.bucket, config=api.ObjectStoreConfig(storage=api.StorageType.FILE)
                        )
        return self._store

    @staticmethod
    def is_ref(value: str) -> bool:
        """Whether ``value`` is an artifact reference."""
        return value.startswith(_REF_PREFIX)

    async def put(self, name: str, data: bytes) -> str:
        """Store ``data`` under ``name``; returns the reference to carry in messages."""
        if not name:
            raise ConfigError("artifact name must not be empty")
        store = await self._open()
        with tracer().start_as_current_span("jsflow.tasks.artifact.put") as span:
            span.set_attribute("jsflow.artifact", name)
            span.set_attribute("jsflow.size", len(data))
            with map_nats_errors(bucket=self.bucket, key=name):
                await store.put(name, data)
        return _REF_PREFIX + name

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
            except nats.js.errors.ObjectNotFoundError as exc:
                raise CodecError(f"artifact {name!r} is missing", bucket=self.bucket) from exc
        return bytes(result.data or b"")

    async def delete(self, ref: str) -> None:
        """Remove the artifact a reference points at (no error when already gone)."""
        name = ref[len(_REF_PREFIX) :]
        store = await self._open()
        with map_nats_errors(bucket=self.bucket, key=name):
            try:
                await store.delete(name)
            except nats.js.errors.NotFoundError:
                return
