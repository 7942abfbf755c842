"""Across server restarts: acknowledged writes survive a graceful restart and a SIGKILL,
clients reconnect and keep working, and watches and listeners go on without loss or
repeat."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

import jsflow
from tests.support.watch import STEP, consumer_count, next_change


@pytest_asyncio.fixture
async def server() -> AsyncIterator[jsflow.EmbeddedServer]:
    """A server of this test's own (it is stopped, killed and restarted)."""
    async with jsflow.EmbeddedServer() as srv:
        yield srv


async def _write_acknowledged(url: str, count: int) -> dict[str, int]:
    """Write ``count`` keys and a counter concurrently; return what the server acknowledged."""
    acked: dict[str, int] = {}
    async with await jsflow.connect(url) as client:
        store = await client.object_store("durable", int, history=2)

        async def put(i: int) -> None:
            await store.put(f"k{i}", i)
            acked[f"k{i}"] = i

        entries = await asyncio.gather(
            *(put(i) for i in range(count)),
            *(store.update("counter", lambda n: n + 1) for _ in range(count)),
        )
        acked["counter"] = max(e.value for e in entries if e is not None)
    return acked


async def _read_all(url: str, keys: list[str]) -> dict[str, int | None]:
    async with await jsflow.connect(url) as client:
        store = await client.object_store("durable", int, history=2)
        out: dict[str, int | None] = {}
        for key in keys:
            entry = await store.get(key)
            out[key] = entry.value if entry else None
        return out


async def test_acknowledged_writes_survive_graceful_restart(
    server: jsflow.EmbeddedServer,
) -> None:
    # given acknowledged writes
    acked = await _write_acknowledged(server.url, 200)
    port, store_dir = server.port, server.store_dir
    # when the server is stopped and started on the same store dir
    await server.stop()
    assert not server.running
    await server.start()
    # then every acknowledged write is there, at the same url
    assert (server.port, server.store_dir) == (port, store_dir)
    assert await _read_all(server.url, sorted(acked)) == acked


@pytest.mark.parametrize("rounds", [3])
async def test_acknowledged_writes_survive_kill_9(
    server: jsflow.EmbeddedServer, rounds: int
) -> None:
    for round_ in range(rounds):
        # given acknowledged writes, the last of them acked just now
        acked = await _write_acknowledged(server.url, 300)
        # when the server is SIGKILLed right after the acks, then started again
        server.kill()
        assert not server.running
        await server.start()
        # then no acknowledged write is lost
        got = await _read_all(server.url, sorted(acked))
        assert got == {**acked, "counter": 300 * (round_ + 1)}, f"round {round_}"


async def test_a_client_reconnects_after_restart_and_keeps_working(
    server: jsflow.EmbeddedServer,
) -> None:
    # given a client with a store
    async with await jsflow.connect(server.url) as client:
        store = await client.object_store("durable", int)
        await store.update("n", lambda n: n + 1)
        # when the server restarts under it
        await server.restart()
        # then, once reconnected, updates go on from the stored value
        for _ in range(100):
            if client.is_connected:
                break
            await asyncio.sleep(0.1)
        assert client.is_connected
        entry = await store.update("n", lambda n: n + 1)
        assert entry.value == 2


async def test_sync_always_server_keeps_acknowledged_writes_across_kill_9() -> None:
    # given a server that fsyncs every write before acknowledging it
    async with jsflow.EmbeddedServer(sync_always=True) as srv:
        conf = srv.store_dir.parent / f"{srv.store_dir.name}.conf"
        assert "sync_interval: always" in conf.read_text()
        acked = await _write_acknowledged(srv.url, 50)
        # when it is SIGKILLed and started again
        srv.kill()
        await srv.start()
        # then every acknowledged write is there
        assert await _read_all(srv.url, sorted(acked)) == acked
    assert not conf.exists()


async def test_watch_survives_server_restart_without_loss_or_repeat(
    server: jsflow.EmbeddedServer,
) -> None:
    # given a watch that has seen some writes (history keeps every revision of the key, so
    # a consumer re-created after the restart can still deliver each one)
    async with await jsflow.connect(server.url) as client:
        store = await client.object_store("restart", int, history=20)
        async with store.watch(updates_only=True) as watch:
            before = [await store.put("k", i) for i in range(5)]
            seen = [await next_change(watch) for _ in range(3)]
            # when the server restarts, and more is written once the client reconnects
            await server.restart()
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


async def put_when_back(store: jsflow.ObjectStore[int], key: str, value: int) -> jsflow.Entry[int]:
    """Write once the client has reconnected to the restarted server (bounded retries)."""
    for _ in range(100):
        try:
            return await store.put(key, value)
        except (jsflow.ConnectionFailedError, jsflow.RequestTimeoutError, jsflow.ServerError):
            await asyncio.sleep(0.1)
    raise AssertionError("the server did not come back")


async def test_listeners_wake_after_a_server_restart(
    server: jsflow.EmbeddedServer,
) -> None:
    # given a listener on the shared watch, and the application's own reconnect callback
    reconnected = asyncio.Event()

    async def on_reconnected() -> None:
        reconnected.set()

    async with await jsflow.connect(server.url, reconnected_cb=on_reconnected) as client:
        store = await client.object_store("relisten", int, history=5)
        with await store.listen("k") as listener:
            before = store.shared_watch_resumes
            # when the server restarts and the key changes once the client is back
            await server.restart()
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
    server: jsflow.EmbeddedServer,
) -> None:
    # given an updates-only watch that has seen nothing yet, on a bucket with history
    async with await jsflow.connect(server.url) as client:
        store = await client.object_store("fresh", int, history=10)
        for i in range(3):
            await store.put("k", i)
        async with store.watch("k", updates_only=True) as watch:
            # when the server restarts and one new value is written
            await server.restart()
            entry = await put_when_back(store, "k", 99)
            # then only that value comes, not the three written before the watch began
            change = await next_change(watch)
            assert (change.value, change.revision) == (99, entry.revision)
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(anext(watch), 3.0)
