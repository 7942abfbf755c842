"""No lost update across OS processes incrementing one key through ObjectStore.update."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import jsflow

_WORKER = """
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
    script.write_text(_WORKER)
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
