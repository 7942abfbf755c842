"""ObjectStore[T]: typed state in a JetStream KV bucket with optimistic read-modify-write.

Every write of :meth:`ObjectStore.update` is a compare-and-set on the revision it read. In one
process, concurrent updates of a key are *combined*: queued in arrival order, applied to one
read, and written with one compare-and-set; each caller still gets its own result. The store
remembers the last entry it read or wrote for recently used keys and tries the compare-and-set
against it first, so an uncontended update costs one round trip.

The package, bottom up: ``values`` (the value types), ``bucket`` (the KV stream: create, bind,
check), ``wire`` (one entry's headers, requests and replies), ``entries`` (values to bytes),
``cache`` (the revision cache every single-entry read and write goes through), ``listing``
(keys and history), ``combining`` (the update engine), ``feeds`` (ordered feeds that resume
after reconnects), ``watch`` and ``listeners`` (on feeds), ``object_store`` (the class users
hold) and ``registry`` (one store per connection, bucket, type and codec).
"""

from __future__ import annotations

from jsflow.store.listeners import KeyListener
from jsflow.store.object_store import ObjectStore
from jsflow.store.registry import close_stores, open_store
from jsflow.store.values import (
    MIN_TTL,
    BucketStatus,
    Change,
    Entry,
    Op,
    RetryPolicy,
    StoreOptions,
)
from jsflow.store.watch import Watch

__all__ = [
    "MIN_TTL",
    "BucketStatus",
    "Change",
    "Entry",
    "KeyListener",
    "ObjectStore",
    "Op",
    "RetryPolicy",
    "StoreOptions",
    "Watch",
    "close_stores",
    "open_store",
]
