"""Listing keys: keys() lists each live key once, in order, matching its filter, skipping
deleted and purged ones, even while another client writes; keys() and history() leave no
consumer behind."""

from __future__ import annotations

import asyncio

import jsflow
from tests.support.names import second_client
from tests.support.watch import consumer_count


async def test_keys_lists_live_keys_matching_filter(
    jsflow_client: jsflow.Client, jsflow_bucket: str
) -> None:
    store = await jsflow_client.object_store(jsflow_bucket, int)
    assert await store.keys() == []
    for k in ["a.1", "a.2", "b.1", "a.x.deep", "gone"]:
        await store.put(k, 1)
    await store.put("a.1", 2)  # a second revision lists once
    await store.delete("gone")
    assert await store.keys() == ["a.1", "a.2", "a.x.deep", "b.1"]
    assert await store.keys("a.*") == ["a.1", "a.2"]
    assert await store.keys("a.>") == ["a.1", "a.2", "a.x.deep"]
    assert await store.keys("*.1") == ["a.1", "b.1"]
    assert await store.keys("zzz") == []


async def test_keys_lists_every_stable_key_once_while_another_client_writes(
    jsflow_client: jsflow.Client, jsflow_bucket: str
) -> None:
    async with asyncio.timeout(60):
        # given 600 keys that exist throughout, 100 deleted throughout, and a client churning
        store = await jsflow_client.object_store(jsflow_bucket, int)
        stable = [f"s.{i:04d}" for i in range(600)]
        gone = [f"g.{i:04d}" for i in range(100)]
        await asyncio.gather(*(store.put(k, 0) for k in stable + gone))
        await asyncio.gather(*(store.delete(k) for k in gone))
        async with await second_client(jsflow_client) as other:
            writer = await other.object_store(jsflow_bucket, int)
            stop = asyncio.Event()

            async def churn() -> None:
                n = 0
                while not stop.is_set():
                    n += 1
                    await asyncio.gather(
                        *(writer.put(k, n) for k in stable[n % 2 :: 2]),
                        writer.put(f"c.{n}", n),
                        writer.delete(f"c.{n - 1}"),
                    )

            task = asyncio.create_task(churn())
            try:
                await asyncio.sleep(0.05)
                # when keys are listed five times meanwhile
                for _ in range(5):
                    listed = await store.keys()
                    # then each stable key appears once, no deleted one appears
                    assert len(listed) == len(set(listed))
                    assert set(stable) <= set(listed)
                    assert not set(gone) & set(listed)
                    assert listed == sorted(listed)
            finally:
                stop.set()
                await task


async def test_keys_skips_deleted_purged_and_recreated_keys_correctly(
    jsflow_client: jsflow.Client, jsflow_bucket: str
) -> None:
    async with asyncio.timeout(10):
        store = await jsflow_client.object_store(jsflow_bucket, int, history=3)
        for k in ("live", "deleted", "purged", "back"):
            await store.put(k, 1)
        await store.delete("deleted")
        await store.purge("purged")
        await store.delete("back")
        await store.put("back", 2)
        assert await store.keys() == ["back", "live"]
        assert await store.keys("deleted") == []


async def test_keys_and_history_leave_no_consumer_behind(
    jsflow_client: jsflow.Client, jsflow_bucket: str
) -> None:
    # given a store with data
    store = await jsflow_client.object_store(jsflow_bucket, int, history=3)
    await store.put("a", 1)
    # when keys() and history() run many times
    for _ in range(20):
        assert await store.keys() == ["a"]
        assert len(await store.history("a")) == 1
    # then no consumer is left on the server (they are scarce)
    assert await consumer_count(jsflow_client, jsflow_bucket) == 0
