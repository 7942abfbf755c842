"""Across OS processes: no lost update of one key through ObjectStore.update, mutual
exclusion with increasing fencing tokens under a Lock, and no server outliving the process
that started it."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import sys
import time
from pathlib import Path

import jsflow
from jsflow.client import Client
from jsflow.server import EmbeddedServer
from tests.support.processes import alive

# the lock test's worker process (see its docstring)
_LOCK_WORKER = Path(__file__).with_name("_coord_worker.py")

# the store test's worker process: N increments of one key, started together
_STORE_WORKER = """
import asyncio, os, sys
import jsflow

async def main(url: str, bucket: str, n: int, go: str) -> None:
    async with await jsflow.connect(url) as client:
        store = await client.object_store(bucket, int)
        print("ready", flush=True)
        for _ in range(600):  # start together (bounded wait)
            if os.path.exists(go):
                break
            await asyncio.sleep(0.05)
        for _ in range(n):
            await store.update("shared", lambda v: v + 1)

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]))
"""


async def test_three_processes_lose_no_increment(
    jsflow_server: jsflow.EmbeddedServer,
    jsflow_client: jsflow.Client,
    jsflow_bucket: str,
    tmp_path: Path,
) -> None:
    # given a bucket and a worker script that does N increments of one key
    store = await jsflow_client.object_store(jsflow_bucket, int)
    script = tmp_path / "worker.py"
    script.write_text(_STORE_WORKER)
    go = tmp_path / "go"
    n = 50
    # when three OS processes run it at once
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            str(script),
            jsflow_server.url,
            jsflow_bucket,
            str(n),
            str(go),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for _ in range(3)
    ]
    try:
        for p in procs:  # every worker is connected; then all start at once
            assert p.stdout is not None
            assert await asyncio.wait_for(p.stdout.readline(), timeout=30) == b"ready\n"
        go.touch()
        outcomes = await asyncio.wait_for(
            asyncio.gather(*(p.communicate() for p in procs)), timeout=60
        )
    finally:
        for p in procs:
            if p.returncode is None:
                p.kill()
                await p.wait()
    # then every process succeeded and the value counts every increment
    for proc, (_, err) in zip(procs, outcomes, strict=True):
        assert proc.returncode == 0, err.decode()
    got = await store.get("shared")
    assert got is not None and got.value == 3 * n
    history_len = len(await store.history("shared"))
    assert history_len == 1


async def test_mutual_exclusion_across_three_processes(
    jsflow_server: EmbeddedServer, jsflow_client: Client, jsflow_bucket: str
) -> None:
    # given three OS processes that each increment an unprotected counter 25 times under a lock
    rounds = 25
    data_bucket = f"{jsflow_bucket}_data"
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            str(_LOCK_WORKER),
            jsflow_server.url,
            jsflow_bucket,
            "shared",
            data_bucket,
            str(rounds),
            stdout=asyncio.subprocess.PIPE,
        )
        for _ in range(3)
    ]
    outputs = [await asyncio.wait_for(p.communicate(), 60) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    # then no increment was lost
    data = await jsflow_client.object_store(data_bucket, int)
    entry = await data.get("count")
    assert entry is not None and entry.value == 3 * rounds
    # and ordered by the value each holder read, fencing tokens strictly increase
    seen = sorted((value, token) for out, _ in outputs for token, value in json.loads(out.decode()))
    assert [v for v, _ in seen] == list(range(3 * rounds))
    tokens = [t for _, t in seen]
    assert all(a < b for a, b in itertools.pairwise(tokens))


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
        assert alive(server_pid)
        # when that Python process is SIGKILLed (no cleanup code runs)
        os.kill(child.pid, signal.SIGKILL)
        await child.wait()
        # then the server does not survive it
        deadline = time.monotonic() + 10
        while alive(server_pid) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert not alive(server_pid)
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()
        if server_pid and alive(server_pid):
            os.kill(server_pid, signal.SIGKILL)
