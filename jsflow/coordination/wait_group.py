"""WaitGroup: a distributed count of outstanding work that anyone can wait to reach zero.

The count is the key ``name`` in the bucket ``jsflow_wait_groups`` (a ``WaitGroupState``
protobuf). :meth:`WaitGroup.add` and :meth:`WaitGroup.done` are compare-and-set updates;
:meth:`WaitGroup.wait` listens on the store's one shared watch, so waiters cost the server
nothing per waiter.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from jsflow._proto.wait_group_pb2 import WaitGroupState
from jsflow._validate import check_name, count, duration
from jsflow.connection import check_replicas
from jsflow.coordination._lease import check_timeout
from jsflow.errors import NegativeCountError, RequestTimeoutError
from jsflow.keys import validate_key
from jsflow.observability import tracer
from jsflow.store import ObjectStore, StoreOptions, open_store

if TYPE_CHECKING:
    from jsflow.connection import Connection

__all__ = ["NegativeCountError", "WaitGroup"]


class WaitGroup:
    """A wait group shared by every client that names it.

    ``await wg.add(n)`` before starting ``n`` pieces of work, ``await wg.done()`` after each,
    and ``await wg.wait(timeout=None)`` anywhere to block until the count is zero. Options:
    ``bucket`` (default ``"jsflow_wait_groups"``) and ``recheck`` (seconds between
    safety-net re-reads while waiting; default 5). The constructor does no I/O.
    """

    def __init__(
        self,
        client: Connection,
        name: str,
        *,
        bucket: str = "jsflow_wait_groups",
        recheck: float = 5.0,
        replicas: int | None = None,
    ) -> None:
        self._client = client
        self.replicas = None if replicas is None else check_replicas(replicas)
        self.name = validate_key(name)
        self.bucket = check_name("bucket", bucket)
        self.recheck = duration("recheck", recheck)

    async def _store(self) -> ObjectStore[WaitGroupState]:
        return await open_store(
            self._client, self.bucket, WaitGroupState, StoreOptions(replicas=self.replicas)
        )

    async def add(self, n: int = 1) -> int:
        """Add ``n`` (may be negative) to the count and return the new count.

        Raises :class:`NegativeCountError`, writing nothing, when the count would drop
        below zero, and :class:`jsflow.ConfigError` for ``n`` that is not an int.
        """
        count("n", n, minimum=-(2**63), maximum=2**63 - 1)
        name = self.name

        def apply(state: WaitGroupState) -> None:
            if state.count + n < 0:
                raise NegativeCountError(
                    f"wait group {name!r} has count {state.count}; adding {n} would go negative"
                )
            state.count += n
            if n > 0:
                state.added += n
            else:
                state.done += -n

        with tracer().start_as_current_span("jsflow.wait_group.add") as span:
            span.set_attribute("jsflow.name", name)
            entry = await (await self._store()).update(name, apply)
        return int(entry.value.count)

    async def done(self) -> int:
        """Mark one piece of work done; returns the new count (see :meth:`add`)."""
        return await self.add(-1)

    async def count(self) -> int:
        """The current count (0 when the group was never used)."""
        entry = await (await self._store()).get(self.name)
        return 0 if entry is None else int(entry.value.count)

    async def wait(self, timeout: float | None = None) -> None:
        """Return once the count is zero; :class:`jsflow.RequestTimeoutError` after ``timeout``.

        Wakes on the count's changes through the store's shared watch (registered before the
        read, so no change is missed) and re-reads every ``recheck`` seconds as a safety net.
        As with Go's ``sync.WaitGroup``, reuse the group for a new batch only after waiters of
        the last one returned: a zero that lasts only until the next ``add`` may go unseen.
        """
        timeout = check_timeout(timeout)
        store = await self._store()
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        with tracer().start_as_current_span("jsflow.wait_group.wait") as span:
            span.set_attribute("jsflow.name", self.name)
            with await store.listen(self.name) as listener:
                while True:
                    entry = await store.get(self.name)
                    if entry is None or entry.value.count <= 0:
                        return
                    left = None if deadline is None else deadline - loop.time()
                    if left is not None and left <= 0:
                        raise RequestTimeoutError(
                            f"wait group {self.name!r} still had count {entry.value.count} "
                            f"after {timeout}s"
                        )
                    change = await listener.wait(
                        self.recheck if left is None else min(self.recheck, left)
                    )
                    if change is not None and change.value is not None and change.value.count <= 0:
                        return

    def __repr__(self) -> str:
        return f"WaitGroup({self.name!r})"
