"""The jsflow command: every id of a dlq replay is tried, and no password reaches stderr."""

from __future__ import annotations

import asyncio
import socket
import uuid

import pytest

import jsflow
from jsflow.cli import main
from jsflow.tasks.app import App

pytestmark = pytest.mark.asyncio(loop_scope="session")

PASSWORD = "pw-s3cret-4d1e"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_dlq_replay_replays_every_id_and_reports_each_unknown_one(
    jsflow_server: jsflow.EmbeddedServer,
    jsflow_client: jsflow.Client,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # given one failed task
    app = App(jsflow_client, "t")

    @app.task(name=f"clidlq_{uuid.uuid4().hex[:8]}", retries=0)
    async def broken(x: int) -> int:
        raise RuntimeError("always")

    async with asyncio.timeout(30):
        async with app.worker():
            failed = await broken.submit(1)
            await failed.wait(timeout=10)
        capsys.readouterr()
        # when replaying it between two unknown ids
        ids = ["nope-1", failed.id, "nope-2"]
        argv = ["--url", jsflow_server.url, "dlq", "replay", *ids, "--app", app.scope]
        code = await asyncio.to_thread(main, argv)
    captured = capsys.readouterr()
    # then the known one is replayed, each unknown one is reported, and the exit status is 1
    assert f"{failed.id} replayed" in captured.out
    assert "nope-1" in captured.err and "nope-2" in captured.err
    assert code == 1


async def test_cli_errors_never_show_the_password_of_the_url(
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = f"nats://alice:{PASSWORD}@127.0.0.1:{free_port()}"
    async with asyncio.timeout(15):
        code = await asyncio.to_thread(main, ["--url", url, "tasks", "list"])
    captured = capsys.readouterr()
    assert code == 1
    assert "alice:***@127.0.0.1" in captured.err
    assert PASSWORD not in captured.err + captured.out
