"""EmbeddedServer: a real nats-server that keeps its port, fails typed, and leaves no orphan."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path

import pytest

import jsflow
from jsflow.server import find_server_binary


def _alive(pid: int) -> bool:
    """Whether ``pid`` is a live (not zombie) process."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


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


def test_url_before_start_is_an_error() -> None:
    with pytest.raises(jsflow.ServerStartError):
        _ = jsflow.EmbeddedServer().url


async def test_missing_binary_raises_server_not_found(monkeypatch: pytest.MonkeyPatch) -> None:
    # given JSFLOW_NATS_SERVER naming a file that does not exist
    monkeypatch.setenv("JSFLOW_NATS_SERVER", "/nonexistent/nats-server")
    # when a server starts / then ServerNotFoundError names the extra to install
    with pytest.raises(jsflow.ServerNotFoundError) as info:
        async with jsflow.EmbeddedServer():
            pass
    assert "jsflow[embedded]" in str(info.value)


def test_binary_absent_everywhere_raises_server_not_found(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # given no env override, no binary beside the interpreter, and an empty PATH
    monkeypatch.delenv("JSFLOW_NATS_SERVER", raising=False)
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(jsflow.ServerNotFoundError) as info:
        find_server_binary()
    assert "jsflow[embedded]" in str(info.value)
    assert isinstance(info.value, FileNotFoundError)


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
        assert not _alive(pid)
        await server.start()
        assert server.running and server.pid != pid


_CHILD = """
import asyncio, sys, time
import jsflow

async def main() -> None:
    async with jsflow.EmbeddedServer() as server:
        print(server.pid, flush=True)
        await asyncio.sleep(120)

asyncio.run(main())
"""


async def test_server_dies_with_a_sigkilled_parent(tmp_path: Path) -> None:
    # given a Python process that started an embedded server
    script = tmp_path / "child.py"
    script.write_text(_CHILD)
    child = await asyncio.create_subprocess_exec(
        sys.executable, str(script), stdout=asyncio.subprocess.PIPE
    )
    assert child.stdout is not None
    server_pid = 0
    try:
        line = await asyncio.wait_for(child.stdout.readline(), timeout=30)
        server_pid = int(line)
        assert _alive(server_pid)
        # when that Python process is SIGKILLed (no cleanup code runs)
        os.kill(child.pid, signal.SIGKILL)
        await child.wait()
        # then the server does not survive it
        deadline = time.monotonic() + 10
        while _alive(server_pid) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert not _alive(server_pid)
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()
        if server_pid and _alive(server_pid):
            os.kill(server_pid, signal.SIGKILL)


def test_local_cluster_rejects_size_zero() -> None:
    with pytest.raises(jsflow.ConfigError):
        jsflow.LocalCluster(0)
