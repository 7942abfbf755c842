"""Election: one leader at a time, observed live, loss reported, leadership handed over."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

import jsflow
from jsflow._proto.common_pb2 import Lease
from jsflow.client import Client
from jsflow.server import EmbeddedServer


async def test_first_candidate_leads_and_second_waits(
    jsflow_server: EmbeddedServer, jsflow_client: Client, jsflow_bucket: str
) -> None:
    # given two candidates in different clients
    async with await jsflow.connect(jsflow_server.url) as other:
        a = jsflow_client.election("sched", ttl=5, candidate_id="a", bucket=jsflow_bucket)
        b = other.election("sched", ttl=5, candidate_id="b", bucket=jsflow_bucket)
        # when the first campaigns
        async with a:
            # then it leads, and the second cannot while it does
            assert a.is_leader and await a.leader() == "a"
            assert not await b.campaign(timeout=0.2)
            assert not b.is_leader
        # and once it resigns, the second wins with a later term
        assert await b.campaign(timeout=10)
        assert b.is_leader and b.term > a.term
        await b.resign()
        assert await b.leader() is None


async def test_observe_yields_current_leader_and_changes(
    jsflow_server: EmbeddedServer, jsflow_client: Client, jsflow_bucket: str
) -> None:
    # given an observer in one client and candidates in another
    async with await jsflow.connect(jsflow_server.url) as other:
        watcher = jsflow_client.election("sched", bucket=jsflow_bucket)
        seen: list[str | None] = []
        changed = asyncio.Event()

        async def observe() -> None:
            async with contextlib.aclosing(watcher.observe()) as leaders:
                async for leader in leaders:
                    seen.append(leader)
                    changed.set()

        task = asyncio.create_task(observe())
        await asyncio.wait_for(changed.wait(), 5)
        assert seen == [None]

        async def expect(value: str | None) -> None:
            while seen[-1] != value:
                changed.clear()
                await asyncio.wait_for(changed.wait(), 5)

        # when candidates lead one after the other
        a = other.election("sched", ttl=5, candidate_id="a", bucket=jsflow_bucket)
        b = other.election("sched", ttl=5, candidate_id="b", bucket=jsflow_bucket)
        await a.campaign()
        await expect("a")
        await a.resign()
        await expect(None)
        await b.campaign()
        await expect("b")
        await b.resign()
        await expect(None)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    # then the observer saw every leader, renewals not reported as changes
    assert seen == [None, "a", None, "b", None]


async def test_lost_leadership_is_reported(jsflow_client: Client, jsflow_bucket: str) -> None:
    # given a leader with a short lease
    election = jsflow_client.election("sched", ttl=1.5, bucket=jsflow_bucket)
    await election.campaign()
    # when its lease is removed behind its back
    store = await jsflow_client.object_store(jsflow_bucket, Lease)
    await store.delete("sched")
    # then it learns promptly: lost is set, is_leader turns false, resign raises
    await asyncio.wait_for(election.lost.wait(), 5)
    assert not election.is_leader
    with pytest.raises(jsflow.LockLostError):
        await election.resign()


async def test_dead_leader_is_replaced_after_ttl(
    jsflow_server: EmbeddedServer, jsflow_client: Client, jsflow_bucket: str
) -> None:
    # given a leader whose process dies
    doomed = await jsflow.connect(jsflow_server.url)
    dead = doomed.election("sched", ttl=1, candidate_id="dead", bucket=jsflow_bucket)
    await dead.campaign()
    await doomed.nc.close()
    # when another candidate campaigns, then it becomes leader once the lease expires
    heir = jsflow_client.election("sched", ttl=5, candidate_id="heir", bucket=jsflow_bucket)
    assert await heir.campaign(timeout=10)
    assert await heir.leader() == "heir"
    await heir.resign()
    await doomed.close()


async def test_resign_without_leading_raises_not_held(jsflow_client: Client) -> None:
    with pytest.raises(jsflow.NotHeldError):
        await jsflow_client.election("never").resign()
