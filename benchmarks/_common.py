"""Helpers shared by jsflow's benchmark scripts (import as ``from _common import ...``).

A benchmark script is run as ``.venv/bin/python benchmarks/<name>.py``; its directory is then
first on ``sys.path``, so ``import _common`` works without packaging. What is here:

* :func:`parse_args`: the common command line (``--url``, ``--quick``, ``--seconds``,
  ``--ops``, ``--rounds``, ``--json``), giving a frozen :class:`BenchConfig`.
* :func:`nats_url`: the given ``--url``, or a fresh :class:`jsflow.EmbeddedServer`.
* :func:`run_sequential` / :func:`run_concurrent`: time an async operation for a duration or a
  number of operations, recording each operation's latency, as a :class:`Measurement`.
* :func:`percentile`, :func:`median`, :func:`summarize`: statistics across rounds.
* :class:`Comparison`, :func:`print_table`: a readable table of ops/s and jsflow/baseline ratios.
* :func:`write_results`: ``benchmarks/results/<name>.json`` with the environment recorded.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import jsflow

__all__ = [
    "RESULTS_DIR",
    "add_json_options",
    "BenchConfig",
    "Comparison",
    "Measurement",
    "Summary",
    "environment",
    "median",
    "nats_url",
    "parse_args",
    "percentile",
    "print_table",
    "run_concurrent",
    "run_sequential",
    "summarize",
    "write_results",
]

RESULTS_DIR = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True, slots=True)
class BenchConfig:
    """What the command line asked for.

    ``seconds`` is the duration of one measured phase; ``ops`` (when set) replaces the
    duration by a fixed number of operations (per task, for concurrent phases). Each phase is
    measured ``rounds`` times, interleaved with the phases it is compared with, and the
    median is reported.
    """

    url: str | None
    seconds: float
    ops: int | None
    rounds: int
    quick: bool
    json_path: Path | None


def parse_args(
    description: str,
    *,
    name: str,
    seconds: float,
    quick_seconds: float,
    rounds: int = 3,
    quick_rounds: int = 2,
    argv: Sequence[str] | None = None,
    extend: Callable[[argparse.ArgumentParser], None] | None = None,
) -> tuple[BenchConfig, argparse.Namespace]:
    """Parse the common options; ``extend`` may add a script's own before parsing.

    Returns the config and the raw namespace (for the options ``extend`` added).
    """
    parser = argparse.ArgumentParser(
        description=description.strip().splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--url", help="use this NATS server instead of an embedded one")
    parser.add_argument(
        "--quick", action="store_true", help=f"short run ({quick_rounds} x {quick_seconds}s)"
    )
    parser.add_argument(
        "--seconds", type=float, help=f"seconds per measured phase (default {seconds})"
    )
    parser.add_argument(
        "--ops", type=int, help="a fixed number of operations per phase instead of --seconds"
    )
    parser.add_argument("--rounds", type=int, help=f"rounds per phase (default {rounds})")
    add_json_options(parser, name)
    if extend is not None:
        extend(parser)
    ns = parser.parse_args(argv)
    phase = ns.seconds if ns.seconds is not None else (quick_seconds if ns.quick else seconds)
    n_rounds = ns.rounds if ns.rounds is not None else (quick_rounds if ns.quick else rounds)
    if not phase > 0 or math.isinf(phase):
        parser.error("--seconds must be a positive number")
    if ns.ops is not None and ns.ops < 1:
        parser.error("--ops must be >= 1")
    if n_rounds < 1:
        parser.error("--rounds must be >= 1")
    config = BenchConfig(
        url=ns.url,
        seconds=phase,
        ops=ns.ops,
        rounds=n_rounds,
        quick=ns.quick,
        json_path=None if ns.no_json else ns.json,
    )
    return config, ns


@contextlib.asynccontextmanager
async def nats_url(url: str | None) -> AsyncIterator[str]:
    """Yield ``url``, or start an :class:`jsflow.EmbeddedServer` for the block and yield its."""
    if url:
        yield url
        return
    async with jsflow.EmbeddedServer() as server:
        yield server.url


def percentile(values: Sequence[float], p: float) -> float:
    """The ``p``-th percentile (0-100) with linear interpolation; ``nan`` for no values."""
    if not 0 <= p <= 100:
        raise ValueError(f"percentile must be within 0..100, got {p}")
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def median(values: Sequence[float]) -> float:
    """The median, ``nan`` for no values."""
    return statistics.median(values) if values else math.nan


@dataclass(slots=True)
class Measurement:
    """One measured phase: successful and failed operations, wall time, per-op latencies."""

    name: str
    ok: int = 0
    failed: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list, repr=False)

    @property
    def ops_per_s(self) -> float:
        """Successful operations per second of wall time."""
        return self.ok / self.seconds if self.seconds > 0 else math.nan


@dataclass(frozen=True, slots=True)
class Summary:
    """Rounds of one phase combined: median ops/s, pooled latency percentiles (ms)."""

    name: str
    rounds: int
    ops_per_s: float
    ops_per_s_rounds: tuple[float, ...]
    ok: int
    failed: int
    p50_ms: float
    p99_ms: float
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "name": self.name,
            "rounds": self.rounds,
            "ops_per_s": round(self.ops_per_s, 1),
            "ops_per_s_rounds": [round(x, 1) for x in self.ops_per_s_rounds],
            "ok": self.ok,
            "failed": self.failed,
            "p50_ms": round(self.p50_ms, 3),
            "p99_ms": round(self.p99_ms, 3),
            **self.extra,
        }


def summarize(name: str, rounds: Sequence[Measurement], **extra: Any) -> Summary:
    """Combine the rounds of one phase (median of ops/s; latency percentiles pooled)."""
    pooled = [lat for m in rounds for lat in m.latencies]
    rates = tuple(m.ops_per_s for m in rounds)
    return Summary(
        name=name,
        rounds=len(rounds),
        ops_per_s=median(rates),
        ops_per_s_rounds=rates,
        ok=sum(m.ok for m in rounds),
        failed=sum(m.failed for m in rounds),
        p50_ms=percentile(pooled, 50) * 1000,
        p99_ms=percentile(pooled, 99) * 1000,
        extra=dict(extra),
    )


async def run_sequential(
    name: str, op: Callable[[], Awaitable[bool]], *, seconds: float, ops: int | None
) -> Measurement:
    """Await ``op()`` back to back for ``seconds`` (or exactly ``ops`` times).

    ``op`` returns whether it succeeded; failures are counted, not retried here.
    """
    result = Measurement(name)
    started = time.perf_counter()
    deadline = started + seconds
    done = 0
    while (done < ops) if ops is not None else (time.perf_counter() < deadline):
        t0 = time.perf_counter()
        ok = await op()
        result.latencies.append(time.perf_counter() - t0)
        done += 1
        if ok:
            result.ok += 1
        else:
            result.failed += 1
    result.seconds = time.perf_counter() - started
    return result


async def run_concurrent(
    name: str,
    op: Callable[[], Awaitable[bool]],
    *,
    tasks: int,
    seconds: float,
    ops_per_task: int | None,
) -> Measurement:
    """Run ``tasks`` asyncio tasks, each awaiting ``op()`` back to back.

    Each task stops after ``ops_per_task`` operations, or (without it) starts no new
    operation once ``seconds`` have passed. Wall time runs until the last task finished.
    """
    import asyncio

    result = Measurement(name)
    started = time.perf_counter()
    deadline = started + seconds

    async def worker() -> None:
        done = 0
        while (done < ops_per_task) if ops_per_task is not None else time.perf_counter() < deadline:
            t0 = time.perf_counter()
            ok = await op()
            result.latencies.append(time.perf_counter() - t0)
            done += 1
            if ok:
                result.ok += 1
            else:
                result.failed += 1

    async with asyncio.TaskGroup() as group:
        for _ in range(tasks):
            group.create_task(worker())
    result.seconds = time.perf_counter() - started
    return result


@dataclass(frozen=True, slots=True)
class Comparison:
    """jsflow against a baseline on the same workload; ``ratio`` = jsflow / baseline ops/s."""

    title: str
    jsflow: Summary
    baseline: Summary
    target: float | None = None

    @property
    def ratio(self) -> float:
        """How many times the baseline's throughput jsflow reached."""
        base = self.baseline.ops_per_s
        return self.jsflow.ops_per_s / base if base > 0 else math.inf

    @property
    def met(self) -> bool | None:
        """Whether ``ratio`` reaches ``target`` (``None`` without a target)."""
        return None if self.target is None else self.ratio >= self.target

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "title": self.title,
            "jsflow": self.jsflow.to_dict(),
            "baseline": self.baseline.to_dict(),
            "ratio": round(self.ratio, 2),
            "target": self.target,
            "met": self.met,
        }


def print_table(title: str, comparisons: Sequence[Comparison]) -> None:
    """Print each comparison as two rows (jsflow, baseline) and its ratio against target."""
    header = (
        f"{'workload':<34} {'implementation':<30} {'ops/s':>10} {'p50 ms':>8} "
        f"{'p99 ms':>8} {'failed':>7}"
    )
    rule = "-" * len(header)
    print(f"\n{title}\n{rule}\n{header}\n{rule}")
    for comp in comparisons:
        for workload, summary in ((comp.title, comp.jsflow), ("", comp.baseline)):
            print(
                f"{workload:<34} {summary.name:<30} {summary.ops_per_s:>10,.0f} "
                f"{summary.p50_ms:>8.2f} {summary.p99_ms:>8.2f} {summary.failed:>7}"
            )
        verdict = ""
        if comp.target is not None:
            verdict = f"  (target >= {comp.target:g}x: {'met' if comp.met else 'NOT met'})"
        print(f"{'':<34} {'ratio jsflow / baseline':<30} {comp.ratio:>9.2f}x{verdict}")
        print(rule)


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def environment(server_version: str | None = None) -> dict[str, Any]:
    """Where the figures come from: versions, interpreter, machine."""
    return {
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "jsflow": jsflow.__version__,
        "nats_py": _version("nats-py"),
        "nats_server": server_version,
    }


def add_json_options(parser: argparse.ArgumentParser, name: str) -> None:
    """``--json PATH`` (default ``results/<name>.json``) and ``--no-json``."""
    parser.add_argument(
        "--json",
        type=Path,
        default=RESULTS_DIR / f"{name}.json",
        help="where to write results (default: %(default)s)",
    )
    parser.add_argument("--no-json", action="store_true", help="do not write a JSON file")


def write_results(path: Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` as indented JSON to ``path`` (creating its directory)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n")
    return path
