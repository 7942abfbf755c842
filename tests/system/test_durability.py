"""Acknowledged writes survive a graceful restart and a SIGKILL of the server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

import jsflow


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
