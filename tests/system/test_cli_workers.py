"""`jsflow worker --processes N` runs N worker processes that share the work and stop
gracefully together; `--reload` restarts them on the new code when a file changes. The real
command, as a user starts it, against a real server."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import textwrap
from pathlib import Path

import jsflow
from jsflow.tasks.app import App
from jsflow.tasks.function import TaskFunction
from tests.support.names import uniq
from tests.support.polling import eventually

_APP = """
import asyncio
import os
from jsflow.tasks.app import App

app = App(None, {app!r})

@app.task(name="whoami")
async def whoami(pause: float) -> str:
    await asyncio.sleep(pause)
    return {answer}
"""


def _write_app(where: Path, app: str, answer: str) -> None:
    (where / "workerapp.py").write_text(textwrap.dedent(_APP.format(app=app, answer=answer)))


async def _start(where: Path, url: str, *extra: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "jsflow.cli", "--url", url, "worker", "workerapp:app", *extra,
        cwd=where, env={**os.environ, "PYTHONPATH": os.getcwd()},
    )  # fmt: skip


async def _stop(proc: asyncio.subprocess.Process) -> int:
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return await asyncio.wait_for(proc.wait(), 30)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise


def _submitter(client: jsflow.Client, name: str) -> TaskFunction[[float], str]:
    """The app's ``whoami`` task as a submitter sees it (the worker processes run it)."""
    app = App(client, name)

    @app.task(name="whoami")
    async def whoami(pause: float) -> str:
        raise AssertionError("run by the worker processes only")

    return whoami


async def test_processes_share_the_work_and_stop_together(
    tmp_path: Path, jsflow_server: jsflow.EmbeddedServer, jsflow_client: jsflow.Client
) -> None:
    # given `jsflow worker --processes 2`, each process one attempt at a time
    name = uniq("procs")
    _write_app(tmp_path, name, "f'pid {os.getpid()}'")
    ready = tmp_path / "ready"
    proc = await _start(
        tmp_path, jsflow_server.url, "--processes", "2", "--concurrency", "1",
        "--ready-file", str(ready),
    )  # fmt: skip
    whoami = _submitter(jsflow_client, name)
    try:
        async with asyncio.timeout(90):
            await eventually(ready.exists, "every worker process ready", timeout=60)
            # when more tasks come than one process takes at a time
            handles = [await whoami.submit(0.3) for _ in range(8)]
            pids = {await h.result(timeout=60) for h in handles}
            # then both processes ran some of them
            assert len(pids) == 2, pids
    finally:
        # and SIGTERM stops every process gracefully: the supervisor exits 0, ready file gone
        assert await _stop(proc) == 0
    assert not ready.exists()
    assert not list(tmp_path.glob("ready.*"))


async def test_reload_restarts_the_workers_on_the_new_code(
    tmp_path: Path, jsflow_server: jsflow.EmbeddedServer, jsflow_client: jsflow.Client
) -> None:
    # given `jsflow worker --reload` running the first version of a task
    name = uniq("reload")
    _write_app(tmp_path, name, "'v1'")
    ready = tmp_path / "ready"
    proc = await _start(tmp_path, jsflow_server.url, "--reload", "--ready-file", str(ready))
    whoami = _submitter(jsflow_client, name)
    try:
        async with asyncio.timeout(90):
            await eventually(ready.exists, "the worker ready", timeout=60)
            assert await (await whoami.submit(0)).result(timeout=30) == "v1"
            # when the code changes
            _write_app(tmp_path, name, "'v2'")

            # then the tasks submitted from then on run the new code
            async def runs_v2() -> bool:
                return await (await whoami.submit(0)).result(timeout=30) == "v2"

            await eventually(runs_v2, "the new code running", timeout=60, interval=0.2)
    finally:
        assert await _stop(proc) == 0
