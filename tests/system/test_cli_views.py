"""The read-only jsflow commands: tables with a header, --json/--limit/--since, task
events, schedules, workers, KV buckets; nothing is created on an empty server; a closed
pipe ends quietly; bad arguments fail before connecting."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid

import pytest

import jsflow
from jsflow.cli import main


async def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = await asyncio.to_thread(main, list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


async def test_read_only_commands_create_nothing_on_an_empty_server(
    capsys: pytest.CaptureFixture[str],
) -> None:
    async with jsflow.EmbeddedServer() as server, await jsflow.connect(server.url) as client:
        for argv in (
            ("tasks", "list"),
            ("dlq", "list"),
            ("workers",),
            ("schedules", "list"),
            ("stats",),
        ):
            code, _, err = await cli(capsys, "--url", server.url, *argv)
            assert code == 0, (argv, err)
        assert [s.config.name for s in await client.js.streams_info()] == []


async def test_tasks_list_has_a_header_and_json_limit_and_since(
    jsflow_server: jsflow.EmbeddedServer,
    jsflow_client: jsflow.Client,
    capsys: pytest.CaptureFixture[str],
) -> None:
    app = jsflow.App(jsflow_client, f"cliv{uuid.uuid4().hex[:6]}")

    @app.task
    async def job(n: int) -> int:
        return n

    async with asyncio.timeout(30), app.worker():
        handles = [await job.submit(n) for n in range(3)]
        for h in handles:
            await h.result(timeout=10)
    url = jsflow_server.url
    code, out, _ = await cli(capsys, "--url", url, "tasks", "list", "--app", app.name)
    lines = out.splitlines()
    assert code == 0 and lines[0].split()[:3] == ["ID", "TASK", "STATUS"]
    assert len(lines) == 4 and all("SUCCEEDED" in line for line in lines[1:])
    code, out, _ = await cli(
        capsys, "--url", url, "tasks", "list", "--app", app.name, "--json", "--limit", "2"
    )
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["id"] for r in rows] == [h.id for h in handles[1:]]  # the 2 most recent
    code, out, _ = await cli(
        capsys, "--url", url, "tasks", "list", "--app", app.name, "--since", "1h", "--json"
    )
    assert len(out.splitlines()) == 3
    code, out, _ = await cli(capsys, "--url", url, "events", handles[0].id, "--app", app.name)
    kinds = [line.split()[2] for line in out.splitlines()]
    assert code == 0 and kinds == ["requested", "started", "completed"]
    code, out, _ = await cli(capsys, "--url", url, "workers", "--app", app.name, "--json")
    (row,) = [json.loads(line) for line in out.splitlines()]
    assert row["task"] == "job" and row["pending"] == 0


async def test_schedules_are_listed_and_cancelled(
    jsflow_server: jsflow.EmbeddedServer,
    jsflow_client: jsflow.Client,
    capsys: pytest.CaptureFixture[str],
) -> None:
    app = jsflow.App(jsflow_client, f"clis{uuid.uuid4().hex[:6]}")

    @app.task
    async def beat() -> None:
        return None

    await beat.schedule("nightly", "0 0 3 * * *")
    url = jsflow_server.url
    code, out, _ = await cli(capsys, "--url", url, "schedules", "list", "--app", app.name)
    assert code == 0 and "nightly" in out and "beat" in out and "0 0 3 * * *" in out
    code, out, _ = await cli(
        capsys, "--url", url, "schedules", "cancel", "nightly", "--app", app.name
    )
    assert code == 0
    code, out, _ = await cli(capsys, "--url", url, "schedules", "list", "--app", app.name)
    assert "nightly" not in out


async def test_kv_ls_and_get_read_a_bucket(
    jsflow_server: jsflow.EmbeddedServer,
    jsflow_client: jsflow.Client,
    capsys: pytest.CaptureFixture[str],
) -> None:
    bucket = f"cli_kv_{uuid.uuid4().hex[:6]}"
    store = await jsflow_client.object_store(bucket, str)
    await store.put("user.1", "ada")
    await store.put("user.2", "bob")
    url = jsflow_server.url
    code, out, _ = await cli(capsys, "--url", url, "kv", "ls", bucket)
    assert code == 0 and out.split() == ["user.1", "user.2"]
    code, out, _ = await cli(capsys, "--url", url, "kv", "get", bucket, "user.2")
    assert code == 0 and out.strip() == "bob"
    code, _, err = await cli(capsys, "--url", url, "kv", "ls", "no_such_bucket_x")
    assert code == 1 and "does not exist" in err


async def test_bad_arguments_fail_before_connecting(capsys: pytest.CaptureFixture[str]) -> None:
    # the URL is unreachable: a connection error would mean the arguments were not checked
    for argv, says in (
        (("tasks", "show", "bad id!"), "invalid task id"),
        (("tasks", "list", "--app", "no spaces"), "invalid app name"),
        (("kv", "get", "b", "a b"), "invalid key"),
    ):
        code, _, err = await cli(capsys, "--url", "nats://127.0.0.1:1", *argv)
        assert code == 1 and says in err, err


def test_a_closed_pipe_ends_the_command_quietly(jsflow_server: jsflow.EmbeddedServer) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "jsflow.cli", "--url", jsflow_server.url, "--help"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    proc.stdout.close()  # like `| head` exiting at once
    _, err = proc.communicate(timeout=30)
    assert b"Traceback" not in err
