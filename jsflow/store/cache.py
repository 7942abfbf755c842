"""The revision cache: the last entry a store read or wrote, for its recently used keys.

Reads and writes of single entries go through it (:meth:`RevisionCache.read`,
:meth:`RevisionCache.write`), so it always holds the newest entry this store saw. An update
tries its compare-and-set against the cached entry first, so an uncontended update costs
one round trip; a conflict drops the entry (:meth:`RevisionCache.forget`) and the retry
reads the key.
"""

from __future__ import annotations

from collections import OrderedDict

import jsflow.store.wire as wire  # noqa: PLR0402 -- not via the package: no cycle
from jsflow.store.bucket import Bucket
from jsflow.store.values import Raw

__all__ = ["RevisionCache"]


class RevisionCache:
    """An LRU of the last :class:`Raw` entry of up to ``size`` keys of ``bucket`` (0: it
    remembers nothing). It never goes back in time: an entry older than the one it holds
    for a key is ignored."""

    __slots__ = ("_bucket", "_entries", "_size")

    def __init__(self, bucket: Bucket, size: int) -> None:
        self._bucket = bucket
        self._entries: OrderedDict[str, Raw] = OrderedDict()
        self._size = size

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def get(self, key: str) -> Raw | None:
        """The entry remembered for ``key``, if any (no I/O)."""
        return self._entries.get(key)

    def forget(self, key: str) -> None:
        """Drop ``key``'s entry (it lost a compare-and-set: it is stale)."""
        self._entries.pop(key, None)

    async def read(self, key: str) -> Raw:
        """Read ``key``'s latest entry from the server, and remember it."""
        raw = await wire.read(self._bucket, key)
        self._remember(key, raw)
        return raw

    async def write(
        self,
        key: str,
        data: bytes | None,
        *,
        expected: int | None = None,
        ttl: float | None = None,
        headers: dict[str, str] | None = None,
    ) -> int:
        """Publish ``data`` to ``key`` (``None``: a marker, with its ``headers``), remember the
        new entry and return its revision. See :func:`wire.publish` for ``expected``."""
        revision = await wire.publish(
            self._bucket,
            key,
            b"" if data is None else data,
            expected=expected,
            ttl=ttl,
            headers=headers,
        )
        self._remember(key, Raw(revision, data))
        return revision

    def _remember(self, key: str, raw: Raw) -> None:
        if self._size == 0:
            return
        entries = self._entries
        old = entries.get(key)
        if old is not None and old.revision > raw.revision:
            return
        entries[key] = raw
        entries.move_to_end(key)
        while len(entries) > self._size:
            entries.popitem(last=False)
