"""ObjectStore.update against hand-written nats-py compare-and-set, on one real nats-server.

    .venv/bin/python benchmarks/objectstore.py            # about 50 s
    .venv/bin/python benchmarks/objectstore.py --quick    # about 10 s
    .venv/bin/python benchmarks/objectstore.py --url nats://127.0.0.1:4222 --seconds 5

Both sides increment a small dataclass (``Tally(n)``, JSON ``{"n": 42}``) in one KV bucket of
one server (an :class:`jsflow.EmbeddedServer`, or ``--url``), using the same codec, so the
difference is the read-modify-write protocol alone. Each sits on its own key of the same
bucket. jsflow uses its own connection; the raw side a plain ``nats.connect(url)`` one (not
jsflow's, whose client has a faster write and reply path), as a plain nats-py user would.

1. **Sequential updates** (one caller, back to back).
   *jsflow*: ``await store.update(key, inc)``. The store remembers the revision it last wrote,
   so an uncontended update is one round trip: a publish that expects that revision.
   *raw nats-py*: ``kv.get(key)`` then ``kv.update(key, value, last=revision)``: two round
   trips. Target: jsflow >= 1.5x the raw ops/s.
2. **16 concurrent updates of one key** (16 asyncio tasks incrementing the same key).
   *jsflow*: each task awaits ``store.update(key, inc)``; the store combines the queued
   updates of the key into one read-modify-write and one compare-and-set.
   *raw nats-py*: the naive loop: get, ``update(last=revision)``, and on
   ``KeyWrongLastSequenceError`` retry after a random pause of 0-1 ms (up to 100 attempts,
   then the increment counts as failed; the pause roughly doubles the raw throughput against
   retrying at once, so it is the stronger baseline). Target: jsflow >= 10x the raw
   successful increments per second.

Every phase runs ``--rounds`` times (3; 2 with ``--quick``), jsflow and raw interleaved, for
``--seconds`` each (4; 1 with ``--quick``), or for ``--ops`` operations (per task in the
concurrent phase). The table shows the median ops/s over rounds, latency percentiles of single
operations pooled over rounds (for the concurrent phase: one increment, including its retries
or its wait in the combined batch), failures, and the ratio jsflow / raw. After every round
the key is read back: its value must equal the number of successful increments (no lost
update), or the script exits with status 1. Results go to ``benchmarks/results/objectstore.json``.

Reading the table: a ratio above 1 means jsflow did more successful increments per second; a
target line says whether the issue's goal was met. The sequential ratio is bounded by how much
of an update is the network round trip rather than Python work in the client: on a loaded
2-core machine the client's CPU time dominates and the ratio falls towards 1. In the
concurrent phase, ``failed`` counts raw increments that gave up after 100 conflicts, and the
raw p99 shows how unfair the naive loop is to unlucky callers.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import nats.js.errors
from _common import (
    BenchConfig,
    Comparison,
    Measurement,
    environment,
    nats_url,
    parse_args,
    print_table,
    run_concurrent,
    run_sequential,
    summarize,
    write_results,
)
from nats.js.kv import KeyValue

import jsflow

NAME = "objectstore"
TASKS = 16
RAW_MAX_ATTEMPTS = 100
RAW_RETRY_SLEEP = 0.001  # upper bound of the random pause before a raw retry
SEQUENTIAL_TARGET = 1.8
CONTENDED_TARGET = 30.0


@dataclass
class Tally:
    """The benchmark's state: one counter."""

    n: int = 0


def inc(state: Tally) -> None:
    """The update function: increment in place."""
    state.n += 1


class LostUpdateError(jsflow.JsflowError):
    """A key's final value differs from the number of increments that reported success."""


class RawCounter:
    """Hand-written nats-py read-modify-write of one key: get, then update(last=revision)."""

    def __init__(self, kv: KeyValue, codec: jsflow.Codec[Tally], key: str) -> None:
        self._kv = kv
        self._codec = codec
        self._key = key
        self.conflicts = 0

    async def _read(self) -> tuple[Tally, int]:
        try:
            entry = await self._kv.get(self._key)
        except nats.js.errors.KeyNotFoundError:
            return Tally(), 0
        return self._codec.decode(entry.value or b""), int(entry.revision or 0)

    async def increment(self) -> bool:
        """One increment; on conflict retry after a random pause of up to 1 ms (bounded)."""
        for _ in range(RAW_MAX_ATTEMPTS):
            state, revision = await self._read()
            inc(state)
            data = self._codec.encode(state)
            try:
                await self._kv.update(self._key, data, last=revision)
            except nats.js.errors.KeyWrongLastSequenceError:
                self.conflicts += 1
                await asyncio.sleep(random.uniform(0, RAW_RETRY_SLEEP))
                continue
            return True
        return False

    async def value(self) -> int:
        """The key's current count."""
        state, _ = await self._read()
        return state.n


async def _jsflow_value(store: jsflow.ObjectStore[Tally], key: str) -> int:
    entry = await store.get(key)
    return entry.value.n if entry is not None else 0


def _jsflow_op(store: jsflow.ObjectStore[Tally], key: str) -> Callable[[], Awaitable[bool]]:
    async def op() -> bool:
        try:
            await store.update(key, inc)
        except jsflow.ConflictError:
            return False
        return True

    return op


Phase = tuple[str, Callable[[], Awaitable[bool]], Callable[[], Awaitable[int]]]


async def _measure(config: BenchConfig, kind: str, phase: Phase) -> Measurement:
    """One round of one phase: ``kind`` is ``sequential`` or ``contended``."""
    name, op, read = phase
    if kind == "sequential":
        run = run_sequential(name, op, seconds=config.seconds, ops=config.ops)
    else:
        run = run_concurrent(name, op, tasks=TASKS, seconds=config.seconds, ops_per_task=config.ops)
    before = await read()
    measured = await run
    after = await read()
    if after - before != measured.ok:
        raise LostUpdateError(
            f"{name}: {measured.ok} increments succeeded but the value grew by "
            f"{after - before} ({before} -> {after})"
        )
    return measured


async def bench(config: BenchConfig, url: str) -> dict[str, Any]:
    """Run both workloads on one server; return the JSON payload."""
    bucket = f"bench_objectstore_{uuid.uuid4().hex[:8]}"
    async with await jsflow.connect(url) as client, await nats.connect(url) as raw_nc:
        store = await client.object_store(bucket, Tally)
        kv = await raw_nc.jetstream().key_value(bucket)  # plain nats-py: the raw side
        seq_raw = RawCounter(kv, store.codec, "seq.raw")
        hot_raw = RawCounter(kv, store.codec, "hot.raw")
        phases: dict[str, dict[str, Phase]] = {
            "sequential": {
                "jsflow": (
                    "jsflow update",
                    _jsflow_op(store, "seq.jsflow"),
                    lambda: _jsflow_value(store, "seq.jsflow"),
                ),
                "raw": ("nats-py get + update(last=)", seq_raw.increment, seq_raw.value),
            },
            "contended": {
                "jsflow": (
                    "jsflow update (combined)",
                    _jsflow_op(store, "hot.jsflow"),
                    lambda: _jsflow_value(store, "hot.jsflow"),
                ),
                "raw": ("nats-py CAS retry loop", hot_raw.increment, hot_raw.value),
            },
        }
        results: dict[str, dict[str, list[Measurement]]] = {
            kind: {"jsflow": [], "raw": []} for kind in phases
        }
        try:
            for key in ("seq.jsflow", "hot.jsflow", "seq.raw", "hot.raw"):
                await store.put(key, Tally())
            for _ in range(50):  # warm-up: connections, caches, first-write paths
                for sides in phases.values():
                    for _name, op, _read in sides.values():
                        await op()
            hot_raw.conflicts = 0
            for round_no in range(config.rounds):
                order = ("jsflow", "raw") if round_no % 2 == 0 else ("raw", "jsflow")
                for kind, sides in phases.items():
                    for side in order:
                        results[kind][side].append(await _measure(config, kind, sides[side]))
        finally:
            await client.js.delete_key_value(bucket)
        version = client.nc.connected_server_version
        server_version = f"{version.major}.{version.minor}.{version.patch}"

    seconds, ops = config.seconds, config.ops
    sequential, contended = results["sequential"], results["contended"]
    raw_conflicts = hot_raw.conflicts
    raw_hot = summarize("nats-py CAS retry loop", contended["raw"])
    raw_ok = max(raw_hot.ok, 1)
    comparisons = [
        Comparison(
            "sequential update, 1 key",
            summarize("jsflow update", sequential["jsflow"]),
            summarize("nats-py get + update(last=)", sequential["raw"]),
            SEQUENTIAL_TARGET,
        ),
        Comparison(
            f"{TASKS} concurrent updates, 1 key",
            summarize("jsflow update (combined)", contended["jsflow"]),
            summarize(
                "nats-py CAS retry loop",
                contended["raw"],
                conflicts=raw_conflicts,
                conflicts_per_increment=round(raw_conflicts / raw_ok, 2),
            ),
            CONTENDED_TARGET,
        ),
    ]
    print_table(
        f"ObjectStore.update vs raw nats-py  (server {server_version}, "
        f"{config.rounds} rounds x {f'{ops} ops' if ops else f'{seconds:g}s'}, medians)",
        comparisons,
    )
    print(
        f"raw CAS loop: {raw_conflicts:,} conflicts, "
        f"{raw_conflicts / raw_ok:.1f} per successful increment; "
        "every key's final value matched its successful increments"
    )
    return {
        "benchmark": NAME,
        "config": {
            "seconds": seconds,
            "ops": ops,
            "rounds": config.rounds,
            "tasks": TASKS,
            "raw_max_attempts": RAW_MAX_ATTEMPTS,
            "raw_retry_sleep_max_s": RAW_RETRY_SLEEP,
            "url": config.url or "embedded",
        },
        "environment": environment(server_version),
        "comparisons": [c.to_dict() for c in comparisons],
        "verified": True,
    }


def _extend(parser: argparse.ArgumentParser) -> None:
    parser.epilog = __doc__


def main(argv: list[str] | None = None) -> int:
    """Parse the command line, run the benchmark, write JSON; 1 on a lost update."""
    config, _ = parse_args(
        __doc__ or NAME,
        name=NAME,
        seconds=4.0,
        quick_seconds=1.0,
        rounds=3,
        quick_rounds=2,
        argv=argv,
        extend=_extend,
    )

    async def run() -> dict[str, Any]:
        async with nats_url(config.url) as url:
            return await bench(config, url)

    try:
        payload = asyncio.run(run())
    except LostUpdateError as exc:
        print(f"FAILED: lost update: {exc}", file=sys.stderr)
        return 1
    if config.json_path is not None:
        path = write_results(config.json_path, payload)
        print(f"results written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
