"""One store per connection, bucket, type and codec: :func:`open_store`."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, TypeVar

from jsflow._validate import check_name
from jsflow.store.object_store import ObjectStore
from jsflow.store.values import StoreOptions

if TYPE_CHECKING:
    from jsflow.connection import Connection

__all__ = ["close_stores", "open_store"]

T = TypeVar("T")


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
    options: StoreOptions[T] | None = None,
) -> ObjectStore[T]:
    """Create or bind the KV ``bucket`` holding values of type ``tp`` (idempotent); the
    one store of this connection for that bucket, type and codec. ``options``' replicas
    default to the connection's. Closed with the connection. See
    :meth:`jsflow.Client.object_store`."""
    check_name("bucket", bucket)
    opts: StoreOptions[T] = options if options is not None else StoreOptions()
    cache = connection.shared(_StoreCache, _StoreCache)
    cache_key = (bucket, tp, id(opts.codec))
    store = cache.stores.get(cache_key)
    if store is not None and not store.closed:
        return store
    async with cache.locks.setdefault(bucket, asyncio.Lock()):
        store = cache.stores.get(cache_key)
        if store is None or store.closed:
            store = await ObjectStore.open(connection, bucket, tp, opts)
            cache.stores[cache_key] = store
            connection.on_close(store)
    return store


async def close_stores(connection: Connection, bucket: str) -> None:
    """Close and forget the stores of ``bucket`` this connection opened (before the bucket
    is deleted: their watches and cache would refer to what is gone)."""
    cache = connection.shared(_StoreCache, _StoreCache)
    for key in [k for k in cache.stores if k[0] == bucket]:
        await cache.stores.pop(key).aclose()
