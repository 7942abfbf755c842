"""No-op task throughput and latency: jsflow vs taskiq-nats on the same nats-server.

    .venv/bin/python benchmarks/tasks.py [--tasks 2000] [--workers 1 4] [--samples 200]
        [--frameworks jsflow taskiq]

For each framework and worker-process count: start the worker processes, submit ``--tasks``
no-op tasks at once and time submit -> completion of all of them (every task publishes a
core NATS "done" message, counted here, so neither framework's result backend is on the
throughput path). Then submit-to-result latency, one task at a time (``--samples``), through
each framework's own result path (jsflow: ``TaskHandle.result()``; taskiq:
``NATSObjectStoreResultBackend`` + ``wait_result``). Needs ``pip install taskiq-nats``.

Results go to ``benchmarks/results/tasks.json`` (``--json PATH`` to write elsewhere,
``--no-json`` to skip): tasks/s and latency p50/p99 per framework and worker count, and the
jsflow / taskiq tasks/s ratio per worker count.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import nats

import jsflow
from jsflow.tasks.app import App

ROOT = Path(__file__).resolve().parent.parent
BENCH_URL = os.environ.get("BENCH_URL", "nats://127.0.0.1:4222")
CONCURRENCY = 64


# -- taskiq side (module level so `taskiq worker benchmarks.tasks:taskiq_broker` finds it) --
def make_taskiq(url: str) -> tuple[Any, Any]:
    from taskiq_nats import NATSObjectStoreResultBackend, PullBasedJetStreamBroker

    broker = PullBasedJetStreamBroker(
        url, pull_consume_batch=16, pull_consume_timeout=1.0
    ).with_result_backend(NATSObjectStoreResultBackend(servers=url))

    @broker.task(task_name="bench_noop")
    async def noop(run: str) -> int:
        await broker.client.publish(f"bench.done.{run}", b"")
        return 1

    return broker, noop


try:
    taskiq_broker, _taskiq_noop = make_taskiq(BENCH_URL)
except ImportError:  # pragma: no cover - optional peer
    taskiq_broker = None


def jsflow_app(client: jsflow.Client | None) -> App:
    app = App(client, "bench")

    @app.task(name="bench_noop", retries=0)
    async def noop(run: str) -> int:
        assert app.client is not None
        await app.client.nc.publish(f"bench.done.{run}", b"")
        return 1

    return app


async def jsflow_worker(url: str) -> None:
    async with await jsflow.connect(url) as client:
        await jsflow_app(client).run_worker(concurrency=CONCURRENCY)


def start_workers(kind: str, url: str, processes: int) -> list[subprocess.Popen[bytes]]:
    env = {**os.environ, "BENCH_URL": url, "PYTHONPATH": str(ROOT)}
    if kind == "jsflow":
        cmd = [sys.executable, __file__, "--worker", url]
        return [
            subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL)
            for _ in range(processes)
        ]
    taskiq = str(Path(sys.executable).parent / "taskiq")
    cmd = [
        taskiq,
        "worker",
        "benchmarks.tasks:taskiq_broker",
        "--workers",
        str(processes),
        "--max-async-tasks",
        str(CONCURRENCY),
        "--no-configure-logging",
    ]
    return [
        subprocess.Popen(
            cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
    ]


def stop_workers(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


Submit = Callable[[str], Coroutine[Any, Any, Any]]


async def throughput(nc: Any, submit: Submit, n: int) -> float:
    run = uuid.uuid4().hex[:8]
    done = asyncio.Event()
    count = 0

    async def on_done(_msg: Any) -> None:
        nonlocal count
        count += 1
        if count >= n:
            done.set()

    sub = await nc.subscribe(f"bench.done.{run}", cb=on_done)
    started = time.perf_counter()
    for i in range(0, n, 200):
        await asyncio.gather(*(submit(run) for _ in range(min(200, n - i))))
    await asyncio.wait_for(done.wait(), 300)
    elapsed = time.perf_counter() - started
    await sub.unsubscribe()
    return n / elapsed


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1] * 1000


async def bench(kind: str, url: str, processes: int, n: int, samples: int) -> dict[str, float]:
    procs = start_workers(kind, url, processes)
    nc = await nats.connect(url)
    client = await jsflow.connect(url)
    try:
        if kind == "jsflow":
            noop = jsflow_app(client).tasks["bench_noop"]

            async def submit(run: str) -> Any:
                return await noop.submit(run)

            async def one() -> None:
                await (await noop.submit("lat")).result(timeout=30)
        else:
            broker, taskiq_noop = make_taskiq(url)
            await broker.startup()

            async def submit(run: str) -> Any:
                return await taskiq_noop.kiq(run)

            async def one() -> None:
                task = await taskiq_noop.kiq("lat")
                await task.wait_result(check_interval=0.005, timeout=30)

        await throughput(nc, submit, 50)  # warm up: workers connected, consumers bound
        rate = await throughput(nc, submit, n)
        lat = []
        for _ in range(samples):
            t0 = time.perf_counter()
            await one()
            lat.append(time.perf_counter() - t0)
        return {"tasks/s": rate, "p50 ms": pct(lat, 50), "p99 ms": pct(lat, 99)}
    finally:
        if kind == "taskiq":
            await broker.shutdown()
        await client.close()
        await nc.close()
        stop_workers(procs)


async def main(args: argparse.Namespace) -> dict[str, Any]:
    """Run every framework and worker count, print each; return the JSON payload."""
    # Imported here: taskiq's worker processes import this module as ``benchmarks.tasks``,
    # without ``benchmarks/`` on sys.path.
    from _common import environment

    kinds = [k for k in args.frameworks if k == "jsflow" or taskiq_broker is not None]
    runs: list[dict[str, Any]] = []
    async with jsflow.EmbeddedServer() as server:
        os.environ["BENCH_URL"] = server.url
        probe = await nats.connect(server.url)  # only to record the server's version
        version = probe.connected_server_version
        await probe.close()
        for kind in kinds:
            for processes in args.workers:
                result = await bench(kind, server.url, processes, args.tasks, args.samples)
                print(
                    f"{kind:<7} workers={processes}  {result['tasks/s']:8.0f} tasks/s  "
                    f"p50 {result['p50 ms']:6.1f} ms  p99 {result['p99 ms']:6.1f} ms",
                    flush=True,
                )
                runs.append(
                    {
                        "framework": kind,
                        "workers": processes,
                        "tasks_per_s": round(result["tasks/s"], 1),
                        "p50_ms": round(result["p50 ms"], 3),
                        "p99_ms": round(result["p99 ms"], 3),
                    }
                )
    rate = {(r["framework"], r["workers"]): r["tasks_per_s"] for r in runs}
    ratios = [
        {"workers": w, "jsflow_over_taskiq": round(rate["jsflow", w] / rate["taskiq", w], 2)}
        for w in args.workers
        if ("jsflow", w) in rate and rate.get(("taskiq", w))
    ]
    return {
        "benchmark": "tasks",
        "config": {
            "tasks": args.tasks,
            "workers": args.workers,
            "samples": args.samples,
            "frameworks": kinds,
            "taskiq_installed": taskiq_broker is not None,
            "concurrency": CONCURRENCY,
        },
        "environment": environment(f"{version.major}.{version.minor}.{version.patch}"),
        "runs": runs,
        "ratios": ratios,
    }


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        asyncio.run(jsflow_worker(sys.argv[2]))
        sys.exit(0)
    from _common import add_json_options, write_results  # not at the top: see main()

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument(
        "--frameworks", nargs="+", default=["jsflow", "taskiq"], choices=["jsflow", "taskiq"]
    )
    add_json_options(parser, "tasks")
    args = parser.parse_args()
    payload = asyncio.run(main(args))
    if not args.no_json:
        path = write_results(args.json, payload)
        print(f"results written to {path}")
