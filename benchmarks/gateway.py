"""HTTP gateway: command latency, event delivery latency, and the server consumers that
open SSE clients cost, against a real ``jsflow serve`` and ``jsflow worker``.

    .venv/bin/python benchmarks/gateway.py [--quick] [--seconds 5] [--ops 300]
        [--rate 1000] [--clients 1000 10000]

1. Commands: p50/p99 of ``POST /tasks/{name}`` (submit), ``GET /tasks/{id}`` and
   ``POST /tasks/{id}/cancel``, one at a time over a keep-alive connection (httpx).
   Targets: p99 < 50 ms.
2. Delivery: a worker's task reports progress at ``--rate`` events/s in all (four tasks);
   one SSE client follows each task (``GET /tasks/{id}/events``) and one follows the
   firehose (``GET /events``); latency is the event's publish time (stamped by the worker)
   to the client reading it. Target: p99 < 100 ms.
3. Consumers: the server's consumer count (account-wide) before and with N open SSE
   clients (80 % task streams on 100 pending tasks, 20 % firehose), plain asyncio sockets
   each of which has read its first event. Target: constant. ``--quick`` caps N at 2,000.

The gateway (``jsflow serve benchmarks/gateway.py``'s app) and the worker run as their own
processes; the measuring clients run here. Everything shares the machine's cores.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from _common import environment, nats_url, parse_args, percentile, run_sequential, write_results

import jsflow
from jsflow.tasks.app import App
from jsflow.tasks.context import current_task

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
APP_NAME = "gwbench"


def make_app(client: jsflow.Client | None) -> App:
    """The benchmark's app (loaded by ``jsflow serve`` and ``jsflow worker``)."""
    app = App(client, APP_NAME)

    @app.task(name="parked", retries=0)
    async def parked(x: int) -> int:  # no worker runs it: stays pending
        return x

    @app.task(name="emit", retries=0)
    async def emit(n: int, rate: float, delay: float) -> int:
        await asyncio.sleep(delay)  # time for followers to attach
        ctx = current_task()
        started = time.perf_counter()
        for i in range(n):
            wait = started + i / rate - time.perf_counter()
            if wait > 0:
                await asyncio.sleep(wait)
            await ctx.progress(100.0 * (i + 1) / n)  # the event's time is its publish time
        return n

    return app


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def spawn(url: str, *argv: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), str(ROOT)])}
    return subprocess.Popen(
        [sys.executable, "-m", "jsflow.cli", "--url", url, *argv],
        cwd=HERE,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


async def wait_http(http: Any, path: str, timeout: float = 30.0) -> None:
    import httpx

    async with asyncio.timeout(timeout):
        while True:
            with contextlib.suppress(httpx.TransportError):
                if (await http.get(path)).status_code == 200:
                    return
            await asyncio.sleep(0.1)


async def commands(http: Any, ops: int) -> dict[str, Any]:
    ids: list[str] = []
    it = iter(range(10**9))

    async def submit() -> bool:
        resp = await http.post("/tasks/parked", json={"args": [next(it)]})
        if resp.status_code == 201:
            ids.append(resp.json()["id"])
        return resp.status_code == 201

    get_ids = iter(list(range(ops)))

    async def get() -> bool:
        return (await http.get(f"/tasks/{ids[next(get_ids) % len(ids)]}")).status_code == 200

    cancel_ids = iter(list(range(ops)))

    async def cancel() -> bool:
        resp = await http.post(f"/tasks/{ids[next(cancel_ids)]}/cancel")
        return resp.status_code == 200 and resp.json()["cancelled"] is True

    for _ in range(20):  # warm up connections and caches
        await submit()
    ids.clear()
    out = {}
    for name, op in (("submit", submit), ("get", get), ("cancel", cancel)):
        m = await run_sequential(name, op, seconds=60.0, ops=ops)
        out[name] = {
            "ops": m.ok,
            "failed": m.failed,
            "p50_ms": round(percentile(m.latencies, 50) * 1000, 2),
            "p99_ms": round(percentile(m.latencies, 99) * 1000, 2),
            "ops_per_s": round(m.ops_per_s, 1),
        }
    return out


async def follow(
    http: Any, path: str, sink: list[float], stop_at: int | None, sent: list[float] | None = None
) -> int:
    """Read an SSE stream, recording receive - publish time of progress events (and, in
    ``sent``, their publish times)."""
    seen = 0
    async with http.stream("GET", path) as resp:
        async for line in resp.aiter_lines():
            if not line.startswith("data:"):
                continue
            now = time.time()
            event = json.loads(line[5:])
            if event.get("kind") != "progress":
                if event.get("kind") == "completed" and stop_at is None:
                    return seen
                continue
            sink.append(now - event["time"])
            if sent is not None:
                sent.append(event["time"])
            seen += 1
            if stop_at is not None and seen >= stop_at:
                return seen
    return seen


async def delivery(http: Any, rate: float, seconds: float, emitters: int) -> dict[str, Any]:
    per_task = max(1, int(rate * seconds / emitters))
    per_rate = rate / emitters
    task_lat: list[float] = []
    hose_lat: list[float] = []
    total = per_task * emitters
    sent: list[float] = []
    hose = asyncio.create_task(
        follow(http, f"/events?name=emit&app={APP_NAME}", hose_lat, total, sent)
    )
    await asyncio.sleep(0.5)  # the firehose subscribed
    ids = []
    for _ in range(emitters):
        resp = await http.post(
            "/tasks/emit", json={"args": [per_task, per_rate], "kwargs": {"delay": 1.5}}
        )
        ids.append(resp.json()["id"])
    followers = [
        asyncio.create_task(follow(http, f"/tasks/{i}/events", task_lat, None)) for i in ids
    ]
    async with asyncio.timeout(seconds + 60):
        counts = await asyncio.gather(*followers)
        await hose
    elapsed = max(sent) - min(sent) if sent else 0.0  # first to last publish

    def stats(lat: list[float]) -> dict[str, Any]:
        return {
            "events": len(lat),
            "p50_ms": round(percentile(lat, 50) * 1000, 2),
            "p99_ms": round(percentile(lat, 99) * 1000, 2),
            "max_ms": round(max(lat) * 1000, 2) if lat else None,
        }

    return {
        "events_published": total,
        "rate_target": rate,
        "emitting_tasks": emitters,
        "rate_achieved": round(total / elapsed, 1) if elapsed > 0 else None,
        "task_stream": stats(task_lat),
        "firehose": stats(hose_lat),
        "lost": total - sum(counts),
    }


async def open_raw(port: int, path: str) -> asyncio.StreamWriter:
    """An SSE client on a plain socket, returned once it read its first event."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n".encode()
    )
    await writer.drain()
    status = await reader.readline()
    if b" 200 " not in status:
        raise RuntimeError(f"{path}: {status!r}")
    while True:
        line = await reader.readline()
        if not line:
            raise RuntimeError(f"{path}: closed before its first event")
        if line.startswith((b"data:", b"event:")):
            break
    writer.transport.pause_reading()  # keep it open, read nothing more
    return writer


async def consumers_with(
    client: jsflow.Client, http: Any, port: int, counts: list[int]
) -> list[dict[str, Any]]:
    ids = []
    for i in range(100):
        ids.append((await http.post("/tasks/parked", json={"args": [i]})).json()["id"])
    before = (await client.js.account_info()).consumers
    stream_before = (await client.js.stream_info("JSFLOW_TASKS")).state.consumer_count
    results = []
    writers: list[asyncio.StreamWriter] = []
    for n in sorted(counts):
        started = time.perf_counter()
        while len(writers) < n:
            batch = min(250, n - len(writers))
            base = len(writers)
            paths = [
                f"/tasks/{ids[(base + j) % len(ids)]}/events"
                if (base + j) % 5
                else f"/events?app={APP_NAME}"
                for j in range(batch)
            ]
            writers += await asyncio.gather(*(open_raw(port, p) for p in paths))
        opened_s = time.perf_counter() - started
        lat = []
        for i in range(50):  # a command while they are open
            t0 = time.perf_counter()
            await http.get(f"/tasks/{ids[i]}")
            lat.append(time.perf_counter() - t0)
        after = (await client.js.account_info()).consumers
        stream_after = (await client.js.stream_info("JSFLOW_TASKS")).state.consumer_count
        results.append(
            {
                "sse_clients": len(writers),
                "consumers_before": before,
                "consumers_with_clients": after,
                "tasks_stream_consumers_before": stream_before,
                "tasks_stream_consumers_with_clients": stream_after,
                "seconds_to_open": round(opened_s, 1),
                "get_p50_ms_while_open": round(percentile(lat, 50) * 1000, 2),
                "get_p99_ms_while_open": round(percentile(lat, 99) * 1000, 2),
            }
        )
    for w in writers:
        w.close()
    return results


def ms(r: dict[str, Any]) -> str:
    return f"p50 {r['p50_ms']:6.2f} ms  p99 {r['p99_ms']:6.2f} ms"


async def main() -> None:
    def extend(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--rate", type=float, default=1000.0, help="events/s in all (1000)")
        parser.add_argument(
            "--emitters", type=int, default=20, help="tasks sharing the event rate (20)"
        )
        parser.add_argument(
            "--clients", type=int, nargs="+", default=[1000, 10000], help="open SSE clients"
        )

    cfg, ns = parse_args(
        __doc__ or "", name="gateway", seconds=5.0, quick_seconds=2.0, extend=extend
    )
    import httpx

    ops = cfg.ops or (100 if cfg.quick else 300)
    clients = [min(c, 2000) for c in ns.clients] if cfg.quick else list(ns.clients)
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # inherited by the gateway
    if max(clients) + 500 > hard:
        raise SystemExit(f"{max(clients)} clients need more open files than the limit ({hard})")
    async with nats_url(cfg.url) as url:
        port = free_port()
        ready = Path(tempfile.gettempdir()) / f"jsflow-gateway-bench-{uuid.uuid4().hex[:6]}.ready"
        gateway = spawn(
            url, "serve", "gateway:make_app", "--port", str(port), "--log-level", "warning"
        )
        worker = spawn(
            url,
            "worker",
            "gateway:make_app",
            "--tasks",
            "emit",
            "--concurrency",
            "16",
            "--ready-file",
            str(ready),
        )
        limits = httpx.Limits(max_connections=50, max_keepalive_connections=20)
        try:
            async with (
                await jsflow.connect(url) as client,
                httpx.AsyncClient(
                    base_url=f"http://127.0.0.1:{port}", timeout=30, limits=limits
                ) as http,
            ):
                await wait_http(http, "/healthz")
                async with asyncio.timeout(30):
                    while not ready.exists():
                        await asyncio.sleep(0.1)
                server_version = client.nc.connected_server_version
                print("commands (sequential, keep-alive) ...", flush=True)
                cmd = await commands(http, ops)
                for name, r in cmd.items():
                    print(f"  {name:<7} {ms(r)}  ({r['ops']} ops, {r['failed']} failed)")
                print(f"delivery at {ns.rate:.0f} events/s for {cfg.seconds}s ...", flush=True)
                dlv = await delivery(http, ns.rate, cfg.seconds, ns.emitters)
                for path in ("task_stream", "firehose"):
                    r = dlv[path]
                    print(f"  {path:<11} {ms(r)}  max {r['max_ms']} ms  ({r['events']} events)")
                print(f"  achieved {dlv['rate_achieved']} events/s, lost {dlv['lost']}")
                print(f"consumers with {clients} open SSE clients ...", flush=True)
                cons = await consumers_with(client, http, port, clients)
                for r in cons:
                    print(
                        f"  {r['sse_clients']:>6} clients: consumers {r['consumers_before']} -> "
                        f"{r['consumers_with_clients']} (tasks stream "
                        f"{r['tasks_stream_consumers_before']} -> "
                        f"{r['tasks_stream_consumers_with_clients']}); opened in "
                        f"{r['seconds_to_open']}s; GET while open p50 "
                        f"{r['get_p50_ms_while_open']} ms p99 {r['get_p99_ms_while_open']} ms"
                    )
        finally:
            stop(worker)
            stop(gateway)
            ready.unlink(missing_ok=True)
    if cfg.json_path is not None:
        path = write_results(
            cfg.json_path,
            {
                "benchmark": "gateway",
                "environment": environment(str(server_version)),
                "quick": cfg.quick,
                "commands": cmd,
                "delivery": dlv,
                "consumers": cons,
                "targets": {"command_p99_ms": 50, "delivery_p99_ms": 100, "consumers": "constant"},
            },
        )
        print(f"results: {path}")


if __name__ == "__main__":
    asyncio.run(main())
