"""The jsflow command: tasks list/show/cancel (of one app), dlq list/replay, a worker process,
``jsflow server``, and errors that are clear and never show a password."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

import jsflow
from jsflow.cli import main
from jsflow.tasks.app import App
from jsflow.tasks.status import TaskStatus
from tests.support.names import free_port, uniq

pytestmark = pytest.mark.asyncio(loop_scope="session")

PASSWORD = "pw-s3cret-4d1e"


async def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = await asyncio.to_thread(main, list(argv))
    return code, capsys.readouterr().out


async def test_cli_lists_shows_cancels_and_replays(
    jsflow_server: jsflow.EmbeddedServer,
    jsflow_client: jsflow.Client,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # given a failed task and a pending one
    app = App(jsflow_client, "t")
    attempts: list[int] = []

    @app.task(name=uniq("cli"), retries=0)
    async def fragile(x: int) -> int:
        attempts.append(x)
        if len(attempts) == 1:
            raise RuntimeError("first time")
        return x

    async with app.worker():
        failed = await fragile.submit(1)
        await failed.wait(timeout=10)
    pending = await fragile.submit(2)
    url = jsflow_server.url
    scope = ("--app", app.scope)  # the app whose tasks the commands inspect
    # when listing, showing, cancelling and replaying with the CLI
    code, out = await cli(capsys, "--url", url, "tasks", "list", "--name", fragile.name, *scope)
    assert code == 0 and failed.id in out and pending.id in out
    code, out = await cli(capsys, "tasks", "show", failed.id, "--url", url, *scope)
    assert code == 0 and json.loads(out)["status"] == "FAILED"
    code, out = await cli(capsys, "--url", url, "dlq", "list", *scope)
    assert failed.id in out and pending.id not in out
    code, out = await cli(capsys, "--url", url, "tasks", "cancel", pending.id, *scope)
    assert code == 0 and await pending.status() is TaskStatus.CANCELLED
    code, out = await cli(capsys, "--url", url, "dlq", "replay", failed.id, *scope)
    assert code == 0 and "replayed" in out
    # then the replayed dead letter runs again and succeeds
    async with app.worker():
        assert await failed.result(timeout=10) == 1
    code, _ = await cli(capsys, "--url", url, "tasks", "show", "nope", *scope)
    assert code == 1


async def test_killed_worker_task_is_retried_by_another_worker(
    tmp_path: Path, jsflow_server: jsflow.EmbeddedServer, jsflow_client: jsflow.Client
) -> None:
    # given a worker process (the jsflow command) running a task that hangs
    name = uniq("crash")
    (tmp_path / "crashapp.py").write_text(
        textwrap.dedent(
            f"""
            import asyncio
            from jsflow.tasks.app import App

            app = App(None, "crash")

            @app.task(name={name!r})
            async def hang(x: int) -> int:
                await asyncio.sleep(3600)
                return x
            """
        )
    )
    app = App(jsflow_client, "crash")

    @app.task(name=name)
    async def hang(x: int) -> int:
        return x * 2

    handle = await hang.submit(21)
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jsflow.cli",
            "--url",
            jsflow_server.url,
            "worker",
            "crashapp:app",
            "--ack-wait",
            "2",
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(200):
            if await handle.status() is TaskStatus.RUNNING:
                break
            await asyncio.sleep(0.05)
        assert await handle.status() is TaskStatus.RUNNING
        # when that process is killed with SIGKILL mid-task
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    # then another worker picks the task up after the ack deadline and completes it
    async with app.worker(ack_wait=2):
        assert await handle.result(timeout=30) == 42
    assert (await handle.info()).attempt == 2


async def test_cli_without_a_server_fails_with_one_clear_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # given a URL where no server listens
    url = f"nats://127.0.0.1:{free_port()}"
    # when a command runs against it
    for argv in (["tasks", "list"], ["worker", "nosuch:app"]):
        code = await asyncio.to_thread(main, ["--url", url, *argv])
        captured = capsys.readouterr()
        # then it exits 1 with one line naming the URL and how to fix it, no retry log
        assert code == 1
        assert captured.err.count("\n") == 1, captured.err
        assert f"cannot connect to {url}" in captured.err and "--url" in captured.err


async def test_cli_rejects_bad_arguments_clearly(
    jsflow_server: jsflow.EmbeddedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    url = jsflow_server.url
    # an unknown status lists the valid ones
    with pytest.raises(SystemExit) as exited:
        main(["--url", url, "tasks", "list", "--status", "bogus"])
    assert exited.value.code == 2 and "SUCCEEDED" in capsys.readouterr().err
    # a lower-case status is fine
    assert await asyncio.to_thread(main, ["--url", url, "tasks", "list", "--status", "dead"]) == 0
    capsys.readouterr()
    # an unknown task goes to stderr with the error's type
    assert await asyncio.to_thread(main, ["--url", url, "tasks", "show", "nope"]) == 1
    assert "TaskNotFoundError" in capsys.readouterr().err
    # a bad MODULE:ATTR says what is wrong
    for spec, words in (("nosuch", "MODULE:ATTR"), ("nosuch_mod_xyz:app", "No module")):
        assert await asyncio.to_thread(main, ["--url", url, "worker", spec]) == 1
        assert words in capsys.readouterr().err
    # --help works and mentions the default URL
    with pytest.raises(SystemExit) as exited:
        main(["--help"])
    assert exited.value.code == 0 and "JSFLOW_URL" in capsys.readouterr().out


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


async def test_cli_tasks_list_with_app_lists_that_apps_tasks_only(
    jsflow_server: jsflow.EmbeddedServer,
    jsflow_client: jsflow.Client,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # given a pending task of app N and one of the default app, of one task name
    name = uniq("listed")
    ledger, default = App(jsflow_client, uniq("ledger")), App(jsflow_client)
    fns = {}
    for label, app in (("ledger", ledger), ("default", default)):

        async def listed() -> None:
            return None

        fns[label] = app.task(name=name)(listed)
    mine = await fns["ledger"].submit()
    theirs = await fns["default"].submit()
    capsys.readouterr()

    async def tasks_list(*extra: str) -> tuple[int, str]:
        argv = ["--url", jsflow_server.url, "tasks", "list", "--name", name, *extra]
        code = await asyncio.to_thread(main, argv)
        return code, capsys.readouterr().out

    async with asyncio.timeout(30):
        # when listing with --app N, then only N's task is listed
        code, out = await tasks_list("--app", ledger.name)
        assert code == 0 and mine.id in out and theirs.id not in out
        # and without --app, only the default app's
        code, out = await tasks_list()
        assert code == 0 and theirs.id in out and mine.id not in out


async def test_jsflow_server_serves_jetstream_until_interrupted() -> None:
    port = free_port()
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
