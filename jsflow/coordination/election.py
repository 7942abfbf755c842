"""Election: leader election on a lease, with a live view of who leads.

    async with client.election("scheduler", ttl=5) as election:
        while not election.lost.is_set():
            await do_leader_work()

    async for leader in client.election("scheduler").observe():
        print("leader is now", leader)

Leadership is a lease on the key ``name`` in the bucket ``jsflow_elections``, held and renewed
exactly like a :class:`jsflow.Lock`; the leader's id is the lease's owner. The term
(:attr:`Election.term`) is the lease's fencing token, so it strictly increases across leaders.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from types import TracebackType
from typing import TYPE_CHECKING, Self

from jsflow.coordination.lock import Lock

if TYPE_CHECKING:
    from jsflow.connection import Connection

__all__ = ["Election"]


class Election:
    """Campaign for, hold and observe the leadership of ``name``.

    ``async with election:`` campaigns (blocks until leader) and resigns on exit;
    :meth:`campaign` / :meth:`resign` do the same by hand; :meth:`extend` lengthens the
    leadership lease. :attr:`is_leader` turns false and :attr:`lost` is set as soon as
    renewal finds the leadership lost. Options:
    ``candidate_id`` (this candidate's id, default unique per instance), ``bucket`` (default
    ``"jsflow_elections"``), ``recheck`` (safety-net re-check period while waiting; default
    ``ttl``). The constructor does no I/O.
    """

    def __init__(
        self,
        client: Connection,
        name: str,
        *,
        ttl: float = 5.0,
        candidate_id: str | None = None,
        bucket: str = "jsflow_elections",
        recheck: float | None = None,
        replicas: int | None = None,
    ) -> None:
        self._lease = Lock(
            client,
            name,
            ttl=ttl,
            bucket=bucket,
            owner=candidate_id,
            recheck=recheck,
            replicas=replicas,
        )
        self.name = self._lease.name
        self.ttl = self._lease.ttl
        self.candidate_id = self._lease.owner
        self.lost: asyncio.Event = self._lease.lost
        """Set as soon as this candidate learns it lost the leadership it held."""

    @property
    def is_leader(self) -> bool:
        """Whether this candidate leads and has not learned of losing it."""
        return self._lease.held

    @property
    def term(self) -> int:
        """Fencing token of this candidate's latest leadership (0 before the first)."""
        return self._lease.fencing_token

    async def campaign(self, timeout: float | None = None) -> bool:
        """Become leader; ``True`` once leading, ``False`` when ``timeout`` passed first."""
        return await self._lease.acquire(timeout=timeout)

    async def resign(self) -> None:
        """Give up leadership; :class:`jsflow.LockLostError` when it was already lost and
        :class:`jsflow.NotHeldError` when this candidate was not leading."""
        await self._lease.release()

    async def extend(self, additional: float, *, replace_ttl: bool = False) -> None:
        """Add ``additional`` seconds to what remains of the leadership lease
        (``replace_ttl``: make it last ``additional`` seconds from now); the term stays.
        Same checks and errors as :meth:`jsflow.Lock.extend`."""
        await self._lease.extend(additional, replace_ttl=replace_ttl)

    async def leader(self) -> str | None:
        """The current leader's id, or ``None`` when nobody leads."""
        lease = await self._lease.holder()
        return None if lease is None else lease.owner

    async def observe(self) -> AsyncGenerator[str | None, None]:
        """Yield the current leader's id (``None``: no leader), then each change of leader.

        Changes arrive through the store's shared watch (no server consumer per observer).
        Leaders that come and go faster than the iterator is consumed may be skipped: it
        always converges on the current one. Close it with ``aclose()`` or
        :func:`contextlib.aclosing`.
        """
        store = await self._lease._store()
        with await store.listen(self.name) as listener:
            entry = await store.get(self.name)
            revision = 0 if entry is None else entry.revision
            current = None if entry is None else entry.value.owner
            yield current
            while True:
                change = await listener.wait(self._lease.recheck)
                if change is None:  # safety net: re-read
                    entry = await store.get(self.name)
                    if entry is not None and entry.revision < revision:
                        continue
                    leader = None if entry is None else entry.value.owner
                elif change.revision <= revision:
                    continue
                else:
                    revision = change.revision
                    leader = None if change.value is None else change.value.owner
                if leader != current:
                    current = leader
                    yield leader

    async def __aenter__(self) -> Self:
        await self.campaign()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.resign()

    def __repr__(self) -> str:
        return f"Election({self.name!r}, candidate={self.candidate_id!r}, leader={self.is_leader})"
