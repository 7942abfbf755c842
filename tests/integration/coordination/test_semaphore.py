"""Semaphore: never more than ``permits`` holders across clients; expired holders free permits."""

from __future__ import annotations

import asyncio
import random
import uuid
from contextlib import AsyncExitStack

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

import jsflow
from jsflow.client import Client
from jsflow.coordination._lease import LeasedPrimitive
from jsflow.server import EmbeddedServer


async def test_permits_admit_exactly_that_many_holders(
    jsflow_client: Client, jsflow_bucket: str
) -> None:
    # given a semaphore with 2 permits
    sems = [jsflow_client.semaphore("pool", 2, ttl=5, bucket=jsflow_bucket) for _ in range(3)]
    # when three try without blocking
    results = [await s.acquire(blocking=False) for s in sems]
    # then exactly two get a permit, each on its own slot
    assert results == [True, True, False]
    assert {sems[0].slot, sems[1].slot} == {"pool.0", "pool.1"}
    assert sorted(await sems[2].holders()) == sorted([sems[0].owner, sems[1].owner])
    # and a released permit goes to the next one
    await sems[0].release()
    assert await sems[2].acquire(blocking=False)
    await sems[1].release()
    await sems[2].release()


async def test_waiter_gets_permit_when_one_is_released(
    jsflow_server: EmbeddedServer, jsflow_client: Client, jsflow_bucket: str
) -> None:
    # given a full semaphore and a waiter in another client
    async with await jsflow.connect(jsflow_server.url) as other:
        holder = jsflow_client.semaphore("pool", 1, ttl=30, bucket=jsflow_bucket)
        await holder.acquire()
        waiter = other.semaphore("pool", 1, ttl=30, bucket=jsflow_bucket)
        waiting = asyncio.create_task(waiter.acquire(timeout=20))
        await asyncio.sleep(0.2)
        assert not waiting.done()
        # when the holder releases, then the waiter is woken by the watch
        await holder.release()
        assert await asyncio.wait_for(waiting, 10)
        assert waiter.fencing_token > holder.fencing_token
        await waiter.release()


async def test_expired_holder_frees_its_permit(jsflow_client: Client, jsflow_bucket: str) -> None:
    # given a permit held by a holder that stopped renewing
    stale = jsflow_client.semaphore("pool", 1, ttl=1, bucket=jsflow_bucket, auto_renew=False)
    await stale.acquire()
    # when another one waits, then it gets the permit after the lease expired
    fresh = jsflow_client.semaphore("pool", 1, ttl=5, bucket=jsflow_bucket, recheck=30)
    assert await fresh.acquire(timeout=10)
    # and the stale holder's release reports the loss without touching the new lease
    with pytest.raises(jsflow.LockLostError):
        await stale.release()
    assert await fresh.holders() == [fresh.owner]
    await fresh.release()


async def _run_contention(
    clients: list[Client], bucket: str, permits: int, workers: int, rounds: int, seed: int
) -> int:
    """Workers across clients take and release permits; return the most holders seen at once."""
    rng = random.Random(seed)
    name = f"s{uuid.uuid4().hex[:8]}"
    inside = 0
    most = 0

    async def worker(i: int) -> None:
        nonlocal inside, most
        sem = clients[i % len(clients)].semaphore(name, permits, ttl=10, bucket=bucket)
        for _ in range(rounds):
            async with sem:
                inside += 1
                most = max(most, inside)
                assert inside <= permits
                await asyncio.sleep(rng.random() * 0.01)
                inside -= 1

    await asyncio.wait_for(asyncio.gather(*(worker(i) for i in range(workers))), 60)
    return most


@settings(max_examples=10)
@given(
    permits=st.integers(min_value=1, max_value=3),
    workers=st.integers(min_value=2, max_value=7),
    seed=st.integers(min_value=0, max_value=2**16),
)
async def test_semaphore_never_over_admits(
    jsflow_server: EmbeddedServer, permits: int, workers: int, seed: int
) -> None:
    # given workers spread over three clients contending for a semaphore
    async with AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(await jsflow.connect(jsflow_server.url))
            for _ in range(3)
        ]
        bucket = "test_semaphore_never_over_admits"
        # when each takes and releases a permit a few times
        most = await _run_contention(clients, bucket, permits, workers, rounds=3, seed=seed)
    # then no more than `permits` ever held at once, and the permits were used
    assert 1 <= most <= permits


async def test_cancelled_acquire_leaves_every_permit_free(
    jsflow_client: Client, jsflow_bucket: str
) -> None:
    # given acquisitions of a free 3-permit semaphore cancelled at every point of an attempt
    for delay_steps in range(16):
        sem = jsflow_client.semaphore("pool", 3, ttl=30, bucket=jsflow_bucket)
        task = asyncio.create_task(sem.acquire())
        for _ in range(delay_steps):
            await asyncio.sleep(0)
        task.cancel()
        try:
            won = await task
        except asyncio.CancelledError:
            won = False
        if won:
            await sem.release()
        # then no permit is left taken by an acquisition nobody knows about
        assert await sem.holders() == []


class LeaseMachine(RuleBasedStateMachine):
    """Lock and semaphore instances on two clients against a model of who holds what.

    The model says exactly who may hold: a non-blocking acquire wins iff the lock is free
    (a permit is free), an acquire cancelled at any step leaves either a holder the caller
    knows of or nothing, and every new acquisition's fencing token is larger than all before.
    """

    url = ""
    permits = 2
    instances = 4

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.clients = [self.run(jsflow.connect(self.url)) for _ in range(2)]
        self.bucket = f"lease_machine_{uuid.uuid4().hex[:8]}"
        name = f"n{uuid.uuid4().hex[:8]}"
        self.locks: list[LeasedPrimitive] = [
            self.clients[i % 2].lock(name, ttl=60, bucket=self.bucket, auto_renew=False)
            for i in range(self.instances)
        ]
        self.sems: list[LeasedPrimitive] = [
            self.clients[i % 2].semaphore(
                name, self.permits, ttl=60, bucket=self.bucket + "_s", auto_renew=False
            )
            for i in range(self.instances)
        ]
        self.held: dict[str, set[int]] = {"lock": set(), "sem": set()}
        self.top_token: dict[str, int] = {"lock": 0, "sem": 0}

    def run(self, coro):  # type: ignore[no-untyped-def]
        return self.loop.run_until_complete(asyncio.wait_for(coro, 30))

    def _group(self, kind: str) -> tuple[list[LeasedPrimitive], int]:
        return (self.locks, 1) if kind == "lock" else (self.sems, self.permits)

    def _won(self, kind: str, i: int) -> None:
        items, limit = self._group(kind)
        assert i not in self.held[kind]
        self.held[kind].add(i)
        assert len(self.held[kind]) <= limit  # never more holders than the model allows
        token = items[i].fencing_token
        assert token > self.top_token[kind]  # tokens strictly increase across acquisitions
        self.top_token[kind] = token

    kinds = st.sampled_from(["lock", "sem"])
    which = st.integers(min_value=0, max_value=instances - 1)

    @rule(kind=kinds, i=which)
    def try_acquire(self, kind: str, i: int) -> None:
        items, limit = self._group(kind)
        if i in self.held[kind]:
            return
        won = self.run(items[i].acquire(blocking=False))
        assert won == (len(self.held[kind]) < limit)
        if won:
            self._won(kind, i)

    @rule(kind=kinds, i=which, steps=st.integers(min_value=0, max_value=12))
    def cancelled_acquire(self, kind: str, i: int, steps: int) -> None:
        items, _ = self._group(kind)
        if i in self.held[kind]:
            return

        async def attempt() -> bool:
            task = asyncio.create_task(items[i].acquire(timeout=0))
            for _ in range(steps):
                await asyncio.sleep(0)
            task.cancel()
            try:
                return await task
            except asyncio.CancelledError:
                return False

        if self.run(attempt()):
            self._won(kind, i)

    @rule(kind=kinds, i=which)
    def release(self, kind: str, i: int) -> None:
        items, _ = self._group(kind)
        if i not in self.held[kind]:
            with pytest.raises(jsflow.NotHeldError):
                self.run(items[i].release())
            return
        self.run(items[i].release())
        self.held[kind].discard(i)

    @invariant()
    def server_matches_model(self) -> None:
        lock_holder = self.run(self.locks[0].holder())  # type: ignore[attr-defined]
        expected = [self.locks[i].owner for i in self.held["lock"]]
        assert ([lock_holder.owner] if lock_holder else []) == expected
        owners = self.run(self.sems[0].holders())  # type: ignore[attr-defined]
        assert sorted(owners) == sorted(self.sems[i].owner for i in self.held["sem"])

    def teardown(self) -> None:
        for client in self.clients:
            self.run(client.close())
        self.loop.close()


def test_lock_and_semaphore_follow_the_model(jsflow_server: EmbeddedServer) -> None:
    # given the session server / when random acquire, cancel and release sequences run
    # then holders never exceed the limit, the server agrees with the model, tokens increase
    LeaseMachine.url = jsflow_server.url
    state_test = LeaseMachine.TestCase
    state_test.settings = settings(max_examples=15, stateful_step_count=20, deadline=None)
    state_test().runTest()
