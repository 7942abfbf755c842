"""EmbeddedServer: a real nats-server that keeps its port and store across restarts, fails
typed, and recovers from a crash (its arguments: unit/test_server_arguments.py; no orphan
after a killed parent: system/test_processes.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

import jsflow
from tests.support.processes import alive


async def test_embedded_server_exposes_url_and_keeps_port_across_restart() -> None:
    # given a started server
    async with jsflow.EmbeddedServer() as server:
        port, url, store_dir = server.port, server.url, server.store_dir
        assert port > 0 and url == f"nats://127.0.0.1:{port}"
        assert server.running and server.pid is not None
        # when restarted
        await server.restart()
        # then it is reachable at the same url and the same store dir
        assert (server.port, server.url, server.store_dir) == (port, url, store_dir)
        async with await jsflow.connect(server.url) as client:
            assert client.is_connected
        await server.stop()
        assert not server.running and server.pid is None
        await server.start()
        assert server.url == url
    # and leaving the block stops it and removes its temporary store dir
    assert not server.running
    assert not store_dir.exists()


async def test_explicit_store_dir_is_kept(tmp_path: Path) -> None:
    store_dir = tmp_path / "js"
    async with jsflow.EmbeddedServer(store_dir) as server:
        client = await jsflow.connect(server.url)
        async with client:
            await (await client.object_store("kept", int)).put("k", 1)
    assert (store_dir / "jetstream").is_dir()


async def test_bad_server_argument_raises_server_start_error() -> None:
    with pytest.raises(jsflow.ServerStartError) as info:
        async with jsflow.EmbeddedServer(args=["--no-such-flag"]):
            pass
    assert "exited" in str(info.value)


async def test_kill_is_a_crash_and_start_recovers() -> None:
    async with jsflow.EmbeddedServer() as server:
        pid = server.pid
        assert pid is not None
        server.kill()
        assert not alive(pid)
        await server.start()
        assert server.running and server.pid != pid
