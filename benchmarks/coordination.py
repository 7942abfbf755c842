"""jsflow's Lock and RateLimiter against their Redis counterparts, in one run.

    .venv/bin/python benchmarks/coordination.py            # about 60 s
    .venv/bin/python benchmarks/coordination.py --quick    # about 20 s
    .venv/bin/python benchmarks/coordination.py --url nats://127.0.0.1:4222 --seconds 5

The script starts a ``redis-server`` (Debian: ``apt-get install redis-server``) on a free
loopback port with its default persistence, and a :class:`jsflow.EmbeddedServer` (or uses
``--url``). Without ``redis-server``, or without the ``redis`` and ``limits[async-redis]``
packages, it measures jsflow alone and says how to install the rest.

1. **Lock acquire + release cycles** (one caller, uncontended, a new lock object per cycle).
   *jsflow*: ``async with client.lock("bench", ttl=10): pass`` (a TTL'd lease in KV).
   *Redis*: ``async with redis.lock("bench", timeout=10): pass`` (``redis.asyncio.lock.Lock``).
2. **Rate-limit decisions, 1 caller and 64 concurrent callers, one key**, with a limit high
   enough that every request is admitted (the expensive path: every decision writes).
   *jsflow*: ``await limiter.try_acquire(key)`` (GCRA; concurrent callers of one key in one
   process share one compare-and-set per batch).
   *Redis*: ``limits``' ``MovingWindowRateLimiter`` on ``async+redis://`` storage (one Lua
   script call per decision).
3. **Saturated limit, 64 callers** (100 per second: nearly every request is rejected), for
   information. A jsflow denial computed from the state it already holds writes nothing and
   needs no round trip; the state it holds can only be older than the server's, so it is
   never more permissive than the truth.

Targets: jsflow >= 1.0x Redis in phases 1 and 2. Every phase runs ``--rounds`` times (3; 2
with ``--quick``), jsflow and Redis interleaved, for ``--seconds`` each (2; 1 with
``--quick``). The table shows median decisions (or cycles) per second over rounds and
latency percentiles pooled over rounds. Results go to ``benchmarks/results/coordination.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import socket
import subprocess
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from _common import (
    BenchConfig,
    Comparison,
    Measurement,
    Summary,
    environment,
    nats_url,
    parse_args,
    print_table,
    run_concurrent,
    run_sequential,
    summarize,
    write_results,
)

import jsflow

INSTALL_HINT = (
    "for the Redis side: apt-get update && apt-get install -y redis-server; "
    "pip install redis 'limits[async-redis]'"
)
OPEN_LIMIT = 1_000_000  # per second: every request in the benchmark is admitted
SATURATED_LIMIT = 100  # per second: nearly every request is rejected
Op = Callable[[], Awaitable[bool]]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.asynccontextmanager
async def redis_server() -> AsyncIterator[str | None]:
    """A throwaway ``redis-server`` on loopback; yields its URL, or ``None`` if unavailable."""
    binary = shutil.which("redis-server")
    try:
        import limits  # noqa: F401
        import redis.asyncio
    except ImportError:
        binary = None
    if binary is None:
        print(f"redis-server or the redis/limits packages are missing: {INSTALL_HINT}")
        yield None
        return
    port = _free_port()
    with tempfile.TemporaryDirectory(prefix="jsflow-bench-redis-") as workdir:
        proc = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", workdir],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            url = f"redis://127.0.0.1:{port}"
            probe = redis.asyncio.Redis.from_url(url)
            for _ in range(100):
                with contextlib.suppress(Exception):
                    if await probe.ping():
                        break
                await asyncio.sleep(0.05)
            else:
                raise RuntimeError(f"redis-server on port {port} did not answer PING")
            await probe.aclose()
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@dataclass(slots=True)
class Phase:
    """One workload: a title, the jsflow and Redis ops, and how many concurrent callers."""

    title: str
    tasks: int
    jsflow_name: str
    redis_name: str
    jsflow_op: Callable[[], Op]
    redis_op: Callable[[], Op] | None
    target: float | None


async def _measure(config: BenchConfig, name: str, op: Op, tasks: int) -> Measurement:
    await op()  # warm up: buckets, scripts, connections
    if tasks == 1:
        return await run_sequential(name, op, seconds=config.seconds, ops=config.ops)
    return await run_concurrent(
        name, op, tasks=tasks, seconds=config.seconds, ops_per_task=config.ops
    )


def _jsflow_lock(client: jsflow.Client) -> Op:
    async def op() -> bool:
        async with client.lock("bench-lock", ttl=10):
            pass
        return True

    return op


def _jsflow_limiter(client: jsflow.Client, limit: int, allowed: list[int]) -> Op:
    limiter = client.rate_limiter("bench", float(limit), per=1.0, burst=limit)
    key = uuid.uuid4().hex

    async def op() -> bool:
        if (await limiter.try_acquire(key)).allowed:
            allowed[0] += 1
        return True

    return op


def _redis_lock(redis: Any) -> Op:
    async def op() -> bool:
        async with redis.lock("bench-lock", timeout=10):
            pass
        return True

    return op


def _redis_limiter(strategy: Any, limit: int, allowed: list[int]) -> Op:
    from limits import RateLimitItemPerSecond

    item = RateLimitItemPerSecond(limit)
    key = uuid.uuid4().hex

    async def op() -> bool:
        if await strategy.hit(item, "bench", key):
            allowed[0] += 1
        return True

    return op


async def bench(config: BenchConfig, url: str, redis_url: str | None) -> dict[str, Any]:
    """Run every phase; return the JSON payload."""
    client = await jsflow.connect(url)
    redis: Any = None
    strategy: Any = None
    if redis_url is not None:
        import redis.asyncio
        from limits.aio.strategies import MovingWindowRateLimiter
        from limits.storage import storage_from_string

        redis = redis.asyncio.Redis.from_url(redis_url, max_connections=128)
        strategy = MovingWindowRateLimiter(
            storage_from_string(f"async+{redis_url}", max_connections=128)
        )
    admitted: dict[str, list[int]] = {}

    def counted(name: str) -> list[int]:
        return admitted.setdefault(name, [0])

    phases = [
        Phase(
            "lock acquire+release, 1 caller",
            1,
            "jsflow Lock",
            "redis-py asyncio Lock",
            lambda: _jsflow_lock(client),
            (lambda: _redis_lock(redis)) if redis else None,
            1.2,  # the goals of the performance work: 1.2x, 1.2x and 5x
        ),
    ]
    for tasks in (1, 64):
        phases.append(
            Phase(
                f"limiter decisions, {tasks} caller{'s' if tasks > 1 else ''}, 1 key",
                tasks,
                f"jsflow RateLimiter (GCRA) x{tasks}",
                f"limits MovingWindow x{tasks}",
                lambda n=tasks: _jsflow_limiter(client, OPEN_LIMIT, counted(f"jsflow-{n}")),
                (lambda n=tasks: _redis_limiter(strategy, OPEN_LIMIT, counted(f"redis-{n}")))
                if strategy
                else None,
                1.2 if tasks == 1 else 5.0,
            )
        )
    phases.append(
        Phase(
            f"saturated limiter ({SATURATED_LIMIT}/s), 64 callers",
            64,
            "jsflow RateLimiter (GCRA) x64",
            "limits MovingWindow x64",
            lambda: _jsflow_limiter(client, SATURATED_LIMIT, counted("jsflow-sat")),
            (lambda: _redis_limiter(strategy, SATURATED_LIMIT, counted("redis-sat")))
            if strategy
            else None,
            None,
        )
    )

    comparisons: list[Comparison] = []
    solo: list[Summary] = []
    try:
        for phase in phases:
            ours: list[Measurement] = []
            theirs: list[Measurement] = []
            for _ in range(config.rounds):
                ours.append(
                    await _measure(config, phase.jsflow_name, phase.jsflow_op(), phase.tasks)
                )
                if phase.redis_op is not None:
                    theirs.append(
                        await _measure(config, phase.redis_name, phase.redis_op(), phase.tasks)
                    )
            mine = summarize(phase.jsflow_name, ours)
            if theirs:
                base = summarize(phase.redis_name, theirs)
                comparisons.append(Comparison(phase.title, mine, base, target=phase.target))
            else:
                solo.append(mine)
    finally:
        server_version = str(client.nc.connected_server_version)
        await client.close()
        if redis is not None:
            await redis.aclose()

    if comparisons:
        print_table("jsflow coordination vs Redis (median over rounds)", comparisons)
    for summary in solo:
        print(f"{summary.name:<40} {summary.ops_per_s:>10,.0f} ops/s  p50 {summary.p50_ms:.2f} ms")
    print("admitted decisions (all rounds):", {k: v[0] for k, v in admitted.items()})
    return {
        "benchmark": "coordination",
        "config": {
            "seconds": config.seconds,
            "ops": config.ops,
            "rounds": config.rounds,
            "url": config.url or "embedded",
            "redis": redis_url is not None,
            "open_limit_per_s": OPEN_LIMIT,
            "saturated_limit_per_s": SATURATED_LIMIT,
        },
        "environment": environment(server_version),
        "comparisons": [c.to_dict() for c in comparisons],
        "jsflow_only": [s.to_dict() for s in solo],
        "admitted": {k: v[0] for k, v in admitted.items()},
    }


def _extend(parser: argparse.ArgumentParser) -> None:
    parser.epilog = __doc__


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run the benchmark, write the JSON; exit status 1 if a target is missed."""
    config, _ = parse_args(
        __doc__ or "",
        name="coordination",
        seconds=2.0,
        quick_seconds=1.0,
        argv=argv,
        extend=_extend,
    )

    async def run() -> dict[str, Any]:
        async with nats_url(config.url) as url, redis_server() as redis_url:
            return await bench(config, url, redis_url)

    payload = asyncio.run(run())
    if config.json_path is not None:
        path = write_results(config.json_path, payload)
        print(f"results written to {path}")
    missed = [c["title"] for c in payload["comparisons"] if c["met"] is False]
    if missed:
        print("targets missed:", ", ".join(missed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
