"""``jsflow serve`` and ``jsflow worker --ready-file`` as the processes a deployment runs."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx
import pytest

import jsflow
from jsflow.tasks.worker import durable_name
from tests.support.web import uniq

pytestmark = pytest.mark.asyncio(loop_scope="session")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_app(tmp_path: Path, app_name: str) -> str:
    (tmp_path / "webapp.py").write_text(
        textwrap.dedent(
            f"""
            from jsflow.tasks.app import App

            app = App(None, {app_name!r})

            @app.task(name="echo")
            async def echo(text: str) -> str:
                return text
            """
        )
    )
    return "webapp:app"


def start(tmp_path: Path, url: str, *argv: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.getcwd(), str(tmp_path)])}
    return subprocess.Popen(
        [sys.executable, "-m", "jsflow.cli", "--url", url, *argv],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


async def stop(proc: subprocess.Popen[bytes]) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return await asyncio.to_thread(proc.wait, 15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


async def test_jsflow_serve_runs_the_gateway_until_sigterm(jsflow_server, tmp_path):
    # given `jsflow serve` on a free port with an app module
    name = uniq("served")
    port = free_port()
    proc = start(
        tmp_path, jsflow_server.url, "serve", write_app(tmp_path, name), "--port", str(port)
    )
    try:
        async with (
            asyncio.timeout(30),
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as http,
        ):
            while True:  # until it listens
                assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
                try:
                    if (await http.get("/healthz")).status_code == 200:
                        break
                except httpx.TransportError:
                    await asyncio.sleep(0.1)
            # then it serves the app's tasks and the monitor
            apps = (await http.get("/apps")).json()["apps"]
            assert [(a["name"], [t["name"] for t in a["tasks"]]) for a in apps] == [
                (name, ["echo"])
            ]
            resp = await http.post("/tasks/echo", json={"args": ["hi"]})
            assert resp.status_code == 201
            assert (await http.get("/")).status_code == 200
            # and an open event stream does not keep it from stopping
            async with http.stream("GET", f"/tasks/{resp.json()['id']}/events") as events:
                assert events.status_code == 200
                # when it gets SIGTERM, it stops cleanly
                assert await stop(proc) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


async def test_worker_ready_file_appears_once_bound_and_goes_on_exit(
    jsflow_server, jsflow_client: jsflow.Client, tmp_path
):
    # given a worker process started with --ready-file
    name = uniq("ready")
    ready = tmp_path / "ready"
    proc = start(
        tmp_path, jsflow_server.url, "worker", write_app(tmp_path, name), "--ready-file", str(ready)
    )
    try:
        async with asyncio.timeout(30):
            while not ready.exists():
                assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
                await asyncio.sleep(0.05)
        # then its consumer is bound when the file appears
        info = await jsflow_client.js.consumer_info("JSFLOW_TASKS", durable_name("echo", name))
        assert info.name == durable_name("echo", name)
        assert ready.read_text().strip()  # the worker's id
        # and the file is removed when the worker stops
        assert await stop(proc) == 0
        assert not ready.exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
