"""watch() yields changes in order, exactly once; listen() shares one watch; both end with
ConnectionClosedError when their client or connection closes (across server restarts:
system/test_durability.py)."""

from __future__ import annotations

import asyncio

import pytest

import jsflow
from jsflow.errors import ConnectionClosedError
from tests.support.names import second_client
from tests.support.watch import STEP, consumer_count, next_change, take


async def test_watch_yields_initial_values_then_changes(
    jsflow_client: jsflow.Client, jsflow_bucket: str
) -> None:
    # given two keys with values (one written twice) and a key outside the pattern
    store = await jsflow_client.object_store(jsflow_bucket, int, history=5)
    await store.put("a.x", 1)
    await store.put("a.y", 2)
    await store.put("a.x", 3)
    await store.put("b", 9)
    # when watching a.>
    async with store.watch("a.>") as watch:
        # then the latest value of each key comes first, then each change as it happens
        assert sorted(await take(watch, 2)) == [
            ("a.x", 3, jsflow.Op.PUT),
            ("a.y", 2, jsflow.Op.PUT),
        ]
        await store.put("b", 10)
        await store.update("a.y", lambda n: n + 1)
        await store.delete("a.x")
        await store.put("a.z", 5)
        assert await take(watch, 3) == [
            ("a.y", 3, jsflow.Op.PUT),
            ("a.x", None, jsflow.Op.DELETE),
            ("a.z", 5, jsflow.Op.PUT),
        ]


async def test_watch_revisions_increase(jsflow_client: jsflow.Client, jsflow_bucket: str) -> None:
    store = await jsflow_client.object_store(jsflow_bucket, int)
    async with store.watch("k") as watch:
        entries = [await store.put("k", i) for i in range(5)]
        changes = [await next_change(watch) for _ in range(5)]
    assert [c.revision for c in changes] == [e.revision for e in entries]


async def test_watch_updates_only_skips_initial_values(
    jsflow_client: jsflow.Client, jsflow_bucket: str
) -> None:
    store = await jsflow_client.object_store(jsflow_bucket, int)
    await store.put("k", 1)
    async with store.watch("k", updates_only=True) as watch:
        await store.put("k", 2)
        assert await take(watch, 1) == [("k", 2, jsflow.Op.PUT)]


async def test_watch_include_history_replays_all_revisions(
    jsflow_client: jsflow.Client, jsflow_bucket: str
) -> None:
    store = await jsflow_client.object_store(jsflow_bucket, int, history=10)
    for i in range(4):
        await store.put("k", i)
    async with store.watch("k", include_history=True) as watch:
        assert [v for _, v, _ in await take(watch, 4)] == [0, 1, 2, 3]
        await store.put("k", 4)
        assert [v for _, v, _ in await take(watch, 1)] == [4]


async def test_watch_include_history_with_updates_only_is_config_error(
    jsflow_client: jsflow.Client, jsflow_bucket: str
) -> None:
    store = await jsflow_client.object_store(jsflow_bucket, int)
    with pytest.raises(jsflow.ConfigError):
        store.watch("k", include_history=True, updates_only=True)


async def test_watch_reports_purge_and_ttl_expiry_with_no_value(
    jsflow_client: jsflow.Client, jsflow_bucket: str
) -> None:
    # given a watch of every key
    store = await jsflow_client.object_store(jsflow_bucket, int)
    async with store.watch(updates_only=True) as watch:
        # when one key is purged and another expires by its per-key TTL
        await store.put("p", 1)
        await store.purge("p")
        await store.put("t", 2, ttl=1.0)
        # then each shows up as a change with value None
        assert await take(watch, 3) == [
            ("p", 1, jsflow.Op.PUT),
            ("p", None, jsflow.Op.PURGE),
            ("t", 2, jsflow.Op.PUT),
        ]
        expired = await next_change(watch)
        assert expired.key == "t" and expired.value is None
        assert expired.op in (jsflow.Op.PURGE, jsflow.Op.DELETE)


async def test_watch_surfaces_undecodable_values_as_codec_error(
    jsflow_client: jsflow.Client, jsflow_bucket: str
) -> None:
    store = await jsflow_client.object_store(jsflow_bucket, int)
    async with store.watch(updates_only=True) as watch:
        await jsflow_client.js.publish(f"$KV.{jsflow_bucket}.bad", b"{{")
        await store.put("good", 1)
        with pytest.raises(jsflow.CodecError):
            await next_change(watch)
        # and the watch goes on after it
        assert await take(watch, 1) == [("good", 1, jsflow.Op.PUT)]


async def test_closing_a_watch_releases_its_consumer(
    jsflow_client: jsflow.Client, jsflow_bucket: str
) -> None:
    store = await jsflow_client.object_store(jsflow_bucket, int)
    watch = store.watch()
    await watch.start()
    assert await consumer_count(jsflow_client, jsflow_bucket) == 1
    await watch.aclose()
    with pytest.raises(StopAsyncIteration):
        await anext(watch)
    for _ in range(50):
        if await consumer_count(jsflow_client, jsflow_bucket) == 0:
            break
        await asyncio.sleep(0.1)
    assert await consumer_count(jsflow_client, jsflow_bucket) == 0


async def test_listeners_share_one_consumer_and_all_wake(
    jsflow_client: jsflow.Client, jsflow_bucket: str
) -> None:
    # given 2,000 listeners spread over 200 keys
    store = await jsflow_client.object_store(jsflow_bucket, int)
    keys = [f"wait.{i}" for i in range(200)]
    listeners = [await store.listen(keys[i % len(keys)]) for i in range(2000)]
    # then the server holds one consumer for all of them
    assert await consumer_count(jsflow_client, jsflow_bucket) == 1
    # when every key changes
    await asyncio.gather(*(store.put(k, i) for i, k in enumerate(keys)))
    # then every listener wakes with its own key's change
    changes = await asyncio.wait_for(asyncio.gather(*(lis.wait() for lis in listeners)), 30)
    for i, change in enumerate(changes):
        assert change is not None
        assert change.key == keys[i % len(keys)]
        assert change.value == i % len(keys)
    assert await consumer_count(jsflow_client, jsflow_bucket) == 1
    for lis in listeners:
        lis.close()


async def test_listener_ignores_other_keys_and_times_out(
    jsflow_client: jsflow.Client, jsflow_bucket: str
) -> None:
    store = await jsflow_client.object_store(jsflow_bucket, int)
    with await store.listen("mine") as listener:
        await store.put("other", 1)
        assert await listener.wait(timeout=0.3) is None
        await store.delete("mine")
        change = await listener.wait(timeout=STEP)
        assert change is not None and change.op is jsflow.Op.DELETE and change.value is None


async def test_closed_listener_is_not_woken(
    jsflow_client: jsflow.Client, jsflow_bucket: str
) -> None:
    store = await jsflow_client.object_store(jsflow_bucket, int)
    closed = await store.listen("k")
    open_ = await store.listen("k")
    closed.close()
    await store.put("k", 1)
    assert await open_.wait(timeout=STEP) is not None
    assert closed.latest is None


async def test_closing_the_client_ends_a_pending_watch_with_connection_closed(
    jsflow_client: jsflow.Client, jsflow_bucket: str
) -> None:
    async with asyncio.timeout(15):
        # given a watch of another client, iterated in a task that waits for a change
        other = await second_client(jsflow_client)
        store = await other.object_store(jsflow_bucket, int)
        watch = store.watch(updates_only=True)
        await watch.start()
        before = asyncio.all_tasks()
        pending = asyncio.create_task(watch.__anext__())
        await asyncio.sleep(0.1)
        # when the client closes
        await other.close()
        # then the iteration ends with ConnectionClosedError, and so does the next one
        with pytest.raises(ConnectionClosedError):
            await pending
        with pytest.raises(ConnectionClosedError):
            await watch.__anext__()
        # and no jsflow task is left running
        await asyncio.sleep(0.1)
        left = [t for t in asyncio.all_tasks() - before if not t.done() and t is not pending]
        assert [t for t in left if "jsflow" in repr(t.get_coro())] == []


async def test_a_watch_ends_when_the_connection_closes_for_good(
    jsflow_client: jsflow.Client, jsflow_bucket: str
) -> None:
    async with asyncio.timeout(15):
        # given a watch of another client
        other = await second_client(jsflow_client)
        store = await other.object_store(jsflow_bucket, int)
        watch = store.watch(updates_only=True)
        await watch.start()
        pending = asyncio.create_task(watch.__anext__())
        await asyncio.sleep(0.1)
        # when its connection closes without the client being closed
        await other.nc.close()
        # then the pending iteration ends with ConnectionClosedError within seconds
        with pytest.raises(ConnectionClosedError):
            await pending
        await other.close()


async def test_a_listener_waiting_on_a_closed_client_gets_connection_closed(
    jsflow_client: jsflow.Client, jsflow_bucket: str
) -> None:
    async with asyncio.timeout(15):
        other = await second_client(jsflow_client)
        store = await other.object_store(jsflow_bucket, int)
        listener = await store.listen("k")
        pending = asyncio.create_task(listener.wait())
        await asyncio.sleep(0.1)
        await other.close()
        with pytest.raises(ConnectionClosedError):
            await pending
