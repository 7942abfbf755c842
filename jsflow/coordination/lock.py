"""Lock: a distributed lease lock with fencing tokens, on a TTL'd KV key.

    async with client.lock("orders.42", ttl=10) as lock:
        await storage.write(data, fence=lock.fencing_token)

The lease is the key ``name`` in the bucket ``jsflow_locks``, written with a per-key TTL, so
the server frees the lock of a holder that died. See :mod:`jsflow.coordination._lease` for the
protocol and why the fencing token is the lease's creating revision.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from jsflow._proto.common_pb2 import Lease
from jsflow.coordination._lease import HeldLease, LeasedPrimitive, try_create_lease
from jsflow.store import ObjectStore

if TYPE_CHECKING:
    from jsflow.connection import Connection

__all__ = ["Lock"]


class Lock(LeasedPrimitive):
    """A lease lock named ``name``, held by at most one owner at a time across all clients.

    ``await lock.acquire(timeout=None, blocking=True)`` -> bool, ``await lock.release()``,
    ``async with lock:``. While held the lease is renewed every ``ttl / 3`` seconds;
    :attr:`lost` is set as soon as renewal finds the lease lost, and :meth:`release` then
    raises :class:`jsflow.LockLostError` without touching the new holder's lease.
    :attr:`fencing_token` strictly increases across successive holders.
    ``await lock.extend(additional, replace_ttl=False)`` adds ``additional`` seconds to what
    remains of the lease (``replace_ttl``: makes it last ``additional`` seconds from now), as
    redis-py's ``Lock.extend``, keeping the fencing token; renewal never shortens it.

    Options: ``bucket`` (default ``"jsflow_locks"``), ``owner`` (holder id; default unique
    per instance), ``auto_renew`` (default on), ``recheck`` (seconds between safety-net
    re-checks while waiting; default ``ttl``), ``blocking_timeout`` (how long ``async with``
    waits before :class:`jsflow.LockTimeoutError`; default: as long as it takes),
    ``replicas``. :meth:`current_owner` says who holds it from the server's view (any
    process). The constructor does no I/O; it raises
    :class:`jsflow.InvalidKeyError` for an illegal name and :class:`jsflow.ConfigError` for a
    ttl under one second (the server's minimum).
    """

    _default_bucket = "jsflow_locks"

    def __init__(
        self,
        client: Connection,
        name: str,
        *,
        ttl: float = 10.0,
        bucket: str | None = None,
        owner: str | None = None,
        auto_renew: bool = True,
        recheck: float | None = None,
        replicas: int | None = None,
        blocking_timeout: float | None = None,
    ) -> None:
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

    def _keys(self) -> Sequence[str]:
        return (self.name,)

    async def current_owner(self) -> str | None:
        """Who holds the lock now, as the server sees it (any process), or ``None`` when
        it is free: redis-py's ``locked()`` and etcd's ``is_acquired()``, by owner id.
        This instance's own view is :attr:`held`."""
        holders = await self.holders()
        return holders[0] if holders else None

    async def _attempt(self, store: ObjectStore[Lease]) -> HeldLease | None:
        return await try_create_lease(store, self.name, self.owner, self.ttl)

    async def holder(self) -> Lease | None:
        """The lease currently stored for this lock (any holder's), or ``None`` when free."""
        entry = await (await self._store()).get(self.name)
        return None if entry is None else entry.value

    def __repr__(self) -> str:
        return f"Lock({self.name!r}, ttl={self.ttl}, held={self.held})"
