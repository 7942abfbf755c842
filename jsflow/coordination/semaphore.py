"""Semaphore: at most ``permits`` lease holders at once, across all clients.

Each permit is a slot key ``<name>.<i>`` (``i`` in ``range(permits)``) in the bucket
``jsflow_semaphores``, leased exactly like a :class:`jsflow.Lock`: a holder that dies frees
its slot when the slot's TTL runs out. Acquiring tries the slots in random order; waiting wakes
on any slot's change through the store's shared watch.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import TYPE_CHECKING

from jsflow._proto.common_pb2 import Lease
from jsflow._validate import count
from jsflow.coordination._lease import HeldLease, LeasedPrimitive, try_create_lease
from jsflow.keys import validate_key
from jsflow.store import ObjectStore

if TYPE_CHECKING:
    from jsflow.connection import Connection

__all__ = ["MAX_PERMITS", "Semaphore"]

MAX_PERMITS = 1024
"""Upper bound on ``permits``: acquiring may try every slot once."""


class Semaphore(LeasedPrimitive):
    """A distributed semaphore: ``permits`` holders of ``name`` at once, each with a lease.

    Same shape as :class:`jsflow.Lock` (``acquire``/``release``/``async with``, ``lost``,
    ``fencing_token``, renewal every ``ttl / 3``, ``extend`` of the permit's lease). One
    instance holds one permit; tasks that
    share an instance take turns, so give each concurrent holder its own instance
    (``client.semaphore(...)`` does no I/O). Every client must use the same ``permits``
    for one name.
    """

    _default_bucket = "jsflow_semaphores"

    def __init__(
        self,
        client: Connection,
        name: str,
        permits: int,
        *,
        ttl: float = 10.0,
        bucket: str | None = None,
        owner: str | None = None,
        auto_renew: bool = True,
        recheck: float | None = None,
        replicas: int | None = None,
        blocking_timeout: float | None = None,
    ) -> None:
        count("permits", permits, minimum=1, maximum=MAX_PERMITS)
        super().__init__(
            client,
            name,
            ttl=ttl,
            bucket=bucket,
            owner=owner,
            auto_renew=auto_renew,
            recheck=recheck,
            replicas=replicas,
            blocking_timeout=blocking_timeout,
        )
        self.permits = permits
        # The longest slot key must be a legal key too (a name near the key bound is not).
        validate_key(f"{self.name}.{permits - 1}")
        self._slots = tuple(f"{self.name}.{i}" for i in range(permits))
        self._slot: str | None = None

    @property
    def slot(self) -> str | None:
        """The slot key of the permit held (or last held) by this instance."""
        return self._slot

    def _keys(self) -> Sequence[str]:
        return self._slots

    async def _attempt(self, store: ObjectStore[Lease]) -> HeldLease | None:
        order = list(self._slots)
        random.shuffle(order)
        for slot in order:
            held = await try_create_lease(store, slot, self.owner, self.ttl)
            if held is not None:
                self._slot = slot
                return held
        return None

    async def holders(self) -> list[str]:
        """Owner ids of the permits held now, across all clients (one read per slot)."""
        store = await self._store()
        owners = []
        for slot in self._slots:
            entry = await store.get(slot)
            if entry is not None:
                owners.append(entry.value.owner)
        return owners

    def __repr__(self) -> str:
        return f"Semaphore({self.name!r}, permits={self.permits}, held={self.held})"
