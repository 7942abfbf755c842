"""A replicated ObjectStore on a 3-node cluster loses no acknowledged update when a node dies."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import pytest

import jsflow

pytestmark = pytest.mark.cluster
T = TypeVar("T")


@dataclass
class Tally:
    attempted: int = 0
    acked: int = 0
    failed: int = 0
    last_acked: int = 0


async def _writer(store: jsflow.ObjectStore[int], stop: asyncio.Event, tally: Tally) -> None:
    """Increment until told to stop, recording every acknowledged result."""
    while not stop.is_set() and tally.attempted < 5000:
        tally.attempted += 1
        try:
            entry = await store.update("n", lambda n: n + 1)
        except jsflow.JsflowError:
            tally.failed += 1
            await asyncio.sleep(0.05)
            continue
        assert entry.value > tally.last_acked, "an acknowledged value went backwards"
        tally.last_acked = entry.value
        tally.acked += 1


async def _retry(make: Callable[[], Awaitable[T]], attempts: int = 40) -> T:
    """Run ``make()`` until it succeeds: the cluster may still be electing leaders."""
    for _ in range(attempts - 1):
        try:
            return await make()
        except jsflow.JsflowError:
            await asyncio.sleep(0.25)
    return await make()


async def _leader(client: jsflow.Client, stream: str) -> str:
    info = await client.js.stream_info(stream)
    assert info.cluster is not None and info.cluster.leader
    return str(info.cluster.leader)


async def _kill_and_restart(
    cluster: jsflow.LocalCluster, bucket: str, pick_leader: bool
) -> tuple[Tally, int]:
    await cluster.wait_jetstream_ready()
    async with await jsflow.connect(cluster.urls, timeout=2.0) as client:
        store = await _retry(lambda: client.object_store(bucket, int, replicas=3))
        await _retry(lambda: store.put("n", 0))
        leader = await _retry(lambda: _leader(client, f"KV_{bucket}"))
        names = [f"jsflow-n{i}" for i in range(len(cluster.servers))]
        victim = names.index(leader) if pick_leader else (names.index(leader) + 1) % 3
        tally = Tally()
        stop = asyncio.Event()
        writer = asyncio.create_task(_writer(store, stop, tally))
        try:
            # given a writer that is making progress
            while tally.acked < 50:
                await asyncio.sleep(0.05)
                assert not writer.done()
            # when one server (the leader, or a follower) is killed, then restarted
            cluster.servers[victim].kill()
            acked_at_kill = tally.acked
            for _ in range(200):  # up to ~10 s for the survivors to take writes again
                if tally.acked > acked_at_kill + 20:
                    break
                await asyncio.sleep(0.05)
            await cluster.servers[victim].start()
            await asyncio.sleep(0.5)
            before_stop = tally.acked
            for _ in range(200):
                if tally.acked > before_stop + 20:
                    break
                await asyncio.sleep(0.05)
        finally:
            stop.set()
            await asyncio.wait_for(writer, 30)
        entry = await _retry(lambda: store.get("n"))
        assert entry is not None
        return tally, entry.value


async def test_no_acknowledged_update_lost_when_a_follower_dies(
    cluster: jsflow.LocalCluster,
) -> None:
    tally, final = await _kill_and_restart(cluster, "follower", pick_leader=False)
    # then the survivors kept taking writes, and nothing acknowledged was lost
    assert tally.acked > 70
    assert tally.acked <= final <= tally.attempted
    assert final >= tally.last_acked


async def test_no_acknowledged_update_lost_when_the_leader_dies(
    cluster: jsflow.LocalCluster,
) -> None:
    tally, final = await _kill_and_restart(cluster, "leader", pick_leader=True)
    assert tally.acked > 70
    assert tally.acked <= final <= tally.attempted
    assert final >= tally.last_acked


async def test_replicated_store_reads_its_own_writes_through_the_leader(
    cluster: jsflow.LocalCluster,
) -> None:
    async with await jsflow.connect(cluster.urls, timeout=2.0) as client:
        store = await _retry(lambda: client.object_store("ryw", int, replicas=3))
        # given writes, a delete and a missing key on a replicated bucket
        for i in range(20):
            await store.put("k", i)
            # then every get sees the acknowledged write at once, whichever server answers
            got = await store.get("k")
            assert got is not None and got.value == i
        await store.delete("k")
        assert await store.get("k") is None
        assert await store.get("never-written") is None
        assert (await store.create("k", 7)).value == 7
