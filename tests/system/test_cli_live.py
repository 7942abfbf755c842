"""The live and dead-letter commands: `jsflow tasks watch` and `jsflow kv watch` follow
changes as they happen (the real command, in a process of its own), and `jsflow dlq` lists
and replays the dead letters of flows beside the dead tasks."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

import jsflow
from jsflow.cli import main
from jsflow.tasks.app import App
from tests.support.names import uniq
from tests.support.polling import eventually
from tests.support.streams import count_is, flow_source, stream_msgs


async def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = await asyncio.to_thread(main, list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@asynccontextmanager
async def command(*argv: str) -> AsyncIterator[asyncio.subprocess.Process]:
    """The real ``jsflow`` command running ``argv``, interrupted on exit."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "jsflow.cli", *argv, stdout=asyncio.subprocess.PIPE
    )
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.send_signal(2)  # Ctrl-C
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()


async def lines_until(
    proc: asyncio.subprocess.Process,
    done: Callable[[list[dict[str, Any]]], bool],
    poke: Callable[[], Awaitable[object]],
) -> list[dict[str, Any]]:
    """JSON lines of ``proc`` until ``done(lines)``; ``poke()`` runs while none has come
    (the command subscribes after it started: what happens before is not live)."""
    assert proc.stdout is not None
    lines: list[dict[str, Any]] = []
    while not done(lines):
        try:
            line = await asyncio.wait_for(proc.stdout.readline(), 0.5)
        except TimeoutError:
            if not lines:
                await poke()
            continue
        assert line, "the command ended"
        lines.append(json.loads(line))
    return lines


async def test_tasks_watch_follows_every_task_of_the_app_live(
    jsflow_server: jsflow.EmbeddedServer, jsflow_client: jsflow.Client
) -> None:
    # given an app with a task and a worker running it
    app = App(jsflow_client, uniq("watched"))

    @app.task(name="double")
    async def double(n: int) -> int:
        return 2 * n

    submitted: list[str] = []

    async def submit() -> None:
        submitted.append((await double.submit(21)).id)

    async with (
        asyncio.timeout(60),
        app.worker(),
        command("--url", jsflow_server.url, "tasks", "watch", "--app", app.name, "--json") as proc,
    ):
        # when tasks are submitted while `jsflow tasks watch` runs
        def completed(lines: list[dict[str, Any]]) -> bool:
            return any(x["kind"] == "completed" for x in lines)

        lines = await lines_until(proc, completed, submit)
    # then it printed their lifecycle, each line naming its task
    done = next(x for x in lines if x["kind"] == "completed")
    assert done["name"] == "double" and done["task_id"] in submitted
    kinds = [x["kind"] for x in lines if x["task_id"] == done["task_id"]]
    assert "started" in kinds and kinds[-1] == "completed"


async def test_kv_watch_prints_puts_and_deletes_as_they_happen(
    jsflow_server: jsflow.EmbeddedServer, jsflow_client: jsflow.Client
) -> None:
    bucket = uniq("cli_watch")
    store = await jsflow_client.object_store(bucket, str)
    await store.put("other.1", "not shown")
    async with (
        asyncio.timeout(60),
        command("--url", jsflow_server.url, "kv", "watch", bucket, "user.>", "--json") as proc,
    ):

        async def poke() -> None:
            await store.put("user.1", "ada")

        first = await lines_until(proc, lambda lines: len(lines) > 0, poke)
        await store.delete("user.1")
        assert proc.stdout is not None
        deleted = json.loads(await proc.stdout.readline())
    assert first[0]["key"] == "user.1" and first[0]["value"] == "ada"
    assert first[0]["op"] == "PUT"
    assert deleted["key"] == "user.1" and deleted["op"] == "DEL" and deleted["value"] is None
    assert deleted["revision"] > first[0]["revision"]


async def test_dlq_lists_and_replays_flow_dead_letters(
    jsflow_server: jsflow.EmbeddedServer,
    jsflow_client: jsflow.Client,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # given a flow whose stage fails on its first message, with a dead-letter stream
    name = uniq("cli_dl")
    seen: list[int] = []

    async def fails_once(msg: jsflow.Message[int]) -> None:
        seen.append(msg.data)
        if len(seen) == 1:
            raise RuntimeError("card declined")

    flow = jsflow.FlowHandler(
        jsflow_client,
        source=flow_source(name),
        stages=[fails_once],
        max_deliver=1,
        dead_letter=f"dl.{name}",
        dead_letter_stream=f"DL_{name}",
    )
    url = jsflow_server.url
    async with asyncio.timeout(60), flow:
        await jsflow_client.publish(f"in.{name}", 7)
        await eventually(lambda: count_is(jsflow_client, f"DL_{name}", 1))
        # when listing dead letters, then the flow's is shown beside the tasks'
        code, out, err = await cli(capsys, "--url", url, "dlq", "list")
        assert code == 0, err
        assert "FLOW DEAD LETTER" in out and f"DL_{name}#1" in out and "card declined" in out
        code, out, _ = await cli(
            capsys, "--url", url, "dlq", "list", "--stream", f"DL_{name}", "--json"
        )
        (row,) = [json.loads(line) for line in out.splitlines()]
        assert row["original_subject"] == f"in.{name}" and row["error_type"] == "RuntimeError"
        # and replaying it republishes it to its subject, where the flow processes it
        code, out, err = await cli(
            capsys, "--url", url, "dlq", "replay", "--stream", f"DL_{name}", "1"
        )
        assert code == 0 and f"DL_{name}#1 replayed to in.{name}" in out, err
        await eventually(lambda: len(seen) == 2, "the replayed message processed")
    assert seen == [7, 7]
    assert await stream_msgs(jsflow_client, f"DL_{name}") == []


async def test_dlq_replay_of_a_stream_takes_sequences(capsys: pytest.CaptureFixture[str]) -> None:
    # the URL is unreachable: the arguments are refused before connecting
    code, _, err = await cli(
        capsys, "--url", "nats://127.0.0.1:1", "dlq", "replay", "--stream", "DL_x", "abc"
    )
    assert code == 1 and "sequences" in err
