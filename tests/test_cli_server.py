"""``jsflow server`` runs the real nats-server with JetStream until it is interrupted."""

from __future__ import annotations

import asyncio
import signal
import socket
import sys

import pytest

import jsflow

pytestmark = pytest.mark.asyncio(loop_scope="session")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_jsflow_server_serves_jetstream_until_interrupted() -> None:
    port = _free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "jsflow.cli", "server", "--port", str(port),
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        async with asyncio.timeout(30):
            assert proc.stdout is not None
            line = (await proc.stdout.readline()).decode()
            assert f"nats://127.0.0.1:{port}" in line
            async with await jsflow.connect(f"nats://127.0.0.1:{port}") as client:
                store = await client.object_store("cli_server", int)
                await store.put("k", 1)
                assert (await store.get("k")).value == 1  # type: ignore[union-attr]
            proc.send_signal(signal.SIGINT)
            assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
