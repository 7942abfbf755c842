"""watch() yields changes in order, exactly once, across restarts; listen() shares one watch."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

import jsflow

STEP = 10.0  # generous per-change timeout: only there to turn a hang into a failure


async def next_change(watch: jsflow.Watch[int]) -> jsflow.Change[int]:
    return await asyncio.wait_for(anext(watch), STEP)


async def take(watch: jsflow.Watch[int], n: int) -> list[tuple[str, int | None, jsflow.Op]]:
    return [(c.key, c.value, c.op) for c in [await next_change(watch) for _ in range(n)]]


async def consumer_count(client: jsflow.Client, bucket: str) -> int:
    info = await client.js.stream_info(f"KV_{bucket}")
    return int(info.state.consumer_count)


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


def test_watch_rejects_bad_patterns_without_a_server() -> None:
    # (store methods that fail fast need no server; a bare object is enough here)
    store = jsflow.ObjectStore.__new__(jsflow.ObjectStore)
    with pytest.raises(jsflow.InvalidKeyError):
        store.watch("a.>.b")


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


@pytest_asyncio.fixture
async def own_server() -> AsyncIterator[jsflow.EmbeddedServer]:
    """A server this test restarts."""
    async with jsflow.EmbeddedServer() as srv:
        yield srv


async def test_watch_survives_server_restart_without_loss_or_repeat(
    own_server: jsflow.EmbeddedServer,
) -> None:
    # given a watch that has seen some writes (history keeps every revision of the key, so
    # a consumer re-created after the restart can still deliver each one)
    async with await jsflow.connect(own_server.url) as client:
        store = await client.object_store("restart", int, history=20)
        async with store.watch(updates_only=True) as watch:
            before = [await store.put("k", i) for i in range(5)]
            seen = [await next_change(watch) for _ in range(3)]
            # when the server restarts, and more is written once the client reconnects
            await own_server.restart()
            after = []
            for i in range(5, 10):
                for _ in range(100):
                    try:
                        after.append(await store.put("k", i))
                        break
                    except (jsflow.ConnectionFailedError, jsflow.RequestTimeoutError):
                        await asyncio.sleep(0.1)
            assert len(after) == 5
            seen += [await next_change(watch) for _ in range(7)]
            # then every revision came exactly once, in order
            assert [c.revision for c in seen] == [e.revision for e in before + after]
            assert [c.value for c in seen] == list(range(10))
            # and nothing more is pending
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(anext(watch), 1.5)


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


async def put_when_back(store: jsflow.ObjectStore[int], key: str, value: int) -> jsflow.Entry[int]:
    """Write once the client has reconnected to the restarted server (bounded retries)."""
    for _ in range(100):
        try:
            return await store.put(key, value)
        except (jsflow.ConnectionFailedError, jsflow.RequestTimeoutError, jsflow.ServerError):
            await asyncio.sleep(0.1)
    raise AssertionError("the server did not come back")


async def test_listeners_wake_after_a_server_restart(
    own_server: jsflow.EmbeddedServer,
) -> None:
    # given a listener on the shared watch, and the application's own reconnect callback
    reconnected = asyncio.Event()

    async def on_reconnected() -> None:
        reconnected.set()

    async with await jsflow.connect(own_server.url, reconnected_cb=on_reconnected) as client:
        store = await client.object_store("relisten", int, history=5)
        with await store.listen("k") as listener:
            before = store.shared_watch_resumes
            # when the server restarts and the key changes once the client is back
            await own_server.restart()
            await asyncio.wait_for(reconnected.wait(), STEP)
            entry = await put_when_back(store, "k", 7)
            # then the listener wakes with that change
            change = await listener.wait(timeout=STEP)
            assert change is not None and change.value == 7 and change.revision == entry.revision
            # and the hub re-created its consumer on the reconnect (not by heartbeat timeout),
            # still one consumer for the bucket, while the application's callback still ran
            assert store.shared_watch_resumes > before
        for _ in range(50):
            if await consumer_count(client, "relisten") == 1:
                break
            await asyncio.sleep(0.1)
        assert await consumer_count(client, "relisten") == 1


async def test_fresh_updates_only_watch_does_not_replay_history_after_restart(
    own_server: jsflow.EmbeddedServer,
) -> None:
    # given an updates-only watch that has seen nothing yet, on a bucket with history
    async with await jsflow.connect(own_server.url) as client:
        store = await client.object_store("fresh", int, history=10)
        for i in range(3):
            await store.put("k", i)
        async with store.watch("k", updates_only=True) as watch:
            # when the server restarts and one new value is written
            await own_server.restart()
            entry = await put_when_back(store, "k", 99)
            # then only that value comes, not the three written before the watch began
            change = await next_change(watch)
            assert (change.value, change.revision) == (99, entry.revision)
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(anext(watch), 3.0)
