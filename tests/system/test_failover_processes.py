"""Failover across OS processes on a 3-node cluster: real SIGSTOP, SIGKILL and kill -9.

* a lock holder paused past its ttl never overlaps the holder that took over (whole and
  fractional ttls);
* a rate limiter shared by four processes never over-admits while the node leading its
  bucket is killed and restarted;
* tasks survive the SIGKILL of one worker process and the kill of the node leading the task
  stream: none lost, every terminal state announced, duplicates counted.

The helper processes are ``_failover_lock_holder.py``, ``_failover_limiter.py`` and
``_failover_worker.py`` next to this file; they write ``time.time()`` stamps to files, which
these tests compare (one host, one clock). Each test prints what it measured (``pytest -s``).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import math
import signal
import sys
import time
import uuid
from collections import Counter as Tally
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import pytest_asyncio

import jsflow
from jsflow.coordination.rate_limiter import DEFAULT_BUCKET as LIMITS_BUCKET
from jsflow.tasks.streams import TASK_STREAM, state_bucket, task_token
from tests.support.cluster import (
    TRANSIENT,
    connect,
    healed,
    leader,
    outcome,
    replicas,
    restart,
    retry,
    wait_for,
)

pytestmark = pytest.mark.cluster
T = TypeVar("T")

_HERE = Path(__file__).parent
_LOCK_HOLDER = _HERE / "_failover_lock_holder.py"
_LIMITER = _HERE / "_failover_limiter.py"
_WORKER = _HERE / "_failover_worker.py"
_LOCKS_BUCKET = "jsflow_locks"


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def cluster() -> AsyncIterator[jsflow.LocalCluster]:
    """One 3-node cluster for this module's tests."""
    async with jsflow.LocalCluster(3) as c:
        yield c


# -- helpers ----------------------------------------------------------------------------------


def _uniq(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


async def _spawn(script: Path, *args: str, log: Path) -> asyncio.subprocess.Process:
    """Start ``script`` with this interpreter; its stdout and stderr go to ``log``."""
    with log.open("wb") as out:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            str(script),
            *args,
            stdout=out,
            stderr=asyncio.subprocess.STDOUT,
            cwd=_HERE.parent.parent,
        )


async def _reap(procs: list[asyncio.subprocess.Process]) -> None:
    """Kill what is still running (resuming a stopped one first) and collect every exit."""
    for proc in procs:
        if proc.returncode is None:
            try:
                proc.send_signal(signal.SIGCONT)
                proc.kill()
            except ProcessLookupError:
                pass
    for proc in procs:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.wait(), 10)


def _text(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


def _lines(path: Path) -> list[str]:
    """The complete lines of ``path`` (a line a killed process left unfinished is dropped)."""
    text = _text(path)
    lines = text.split("\n")
    return lines[:-1]  # the last piece has no newline yet: empty, or unfinished


def _events(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in _lines(path) if line]


async def _await_event(
    path: Path, ev: str, timeout: float, proc: asyncio.subprocess.Process, log: Path
) -> dict[str, Any]:
    """The first event ``ev`` that the holder process writes to ``path`` (bounded)."""
    found: list[dict[str, Any]] = []

    def check() -> bool:
        found[:] = [e for e in _events(path) if e["ev"] == ev]
        return bool(found) or proc.returncode is not None

    await wait_for(check, timeout)
    assert found, f"no {ev!r} event within {timeout}s (rc={proc.returncode}): {_text(log)[-3000:]}"
    return found[0]


# -- 1. a paused lock holder ------------------------------------------------------------------


@pytest.mark.parametrize("ttl", [2.0, 1.5], ids=["ttl=2", "ttl=1.5"])
async def test_a_paused_lock_holder_never_overlaps_the_next_one(
    cluster: jsflow.LocalCluster, tmp_path: Path, ttl: float
) -> None:
    async with asyncio.timeout(60):
        await cluster.wait_jetstream_ready()
        async with await connect(cluster) as client:
            # given the R3 lock bucket, fully replicated
            probe = client.lock(_uniq("probe"))
            assert await retry(lambda: probe.acquire(timeout=10))
            await probe.release()
            assert await retry(lambda: replicas(client, f"KV_{_LOCKS_BUCKET}")) == 3
            await healed(client, f"KV_{_LOCKS_BUCKET}")

        # and two holder processes of one lock: A takes it at once, B when told to
        name = _uniq("paused")
        urls = ",".join(cluster.urls)
        f = {w: {k: tmp_path / f"{w}.{k}" for k in ("out", "go", "release", "log")} for w in "ab"}
        f["a"]["go"].touch()
        procs: dict[str, asyncio.subprocess.Process] = {}
        try:
            for w in "ab":
                procs[w] = await _spawn(
                    _LOCK_HOLDER,
                    urls,
                    name,
                    str(ttl),
                    str(f[w]["out"]),
                    str(f[w]["go"]),
                    str(f[w]["release"]),
                    log=f[w]["log"],
                )
            a, b = procs["a"], procs["b"]
            await _await_event(f["a"]["out"], "acquired", 30, a, f["a"]["log"])
            await _await_event(f["b"]["out"], "ready", 30, b, f["b"]["log"])
            await asyncio.sleep(ttl * 0.6)  # A renews (every ttl/3) while it runs

            # when A is paused (SIGSTOP) past its ttl and B acquires meanwhile
            a.send_signal(signal.SIGSTOP)
            t_stop = time.time()
            f["b"]["go"].touch()
            b_acq = await _await_event(f["b"]["out"], "acquired", 30, b, f["b"]["log"])
            # then A resumes (paused at least its ttl): it reads `held` a while, then releases
            await asyncio.sleep(max(0.0, t_stop + ttl - time.time()))
            t_cont = time.time()
            a.send_signal(signal.SIGCONT)

            def resumed() -> bool:
                return any(e["ev"] == "sample" and e["t0"] > t_cont for e in _events(f["a"]["out"]))

            assert await wait_for(resumed, 20), f"A did not resume: {_text(f['a']['log'])}"
            await asyncio.sleep(0.3)
            f["a"]["release"].touch()
            await asyncio.wait_for(a.wait(), 20)
            f["b"]["release"].touch()
            await asyncio.wait_for(b.wait(), 20)
        finally:
            await _reap(list(procs.values()))

        a_events = _events(f["a"]["out"])
        b_events = _events(f["b"]["out"])
        a_acq = next(e for e in a_events if e["ev"] == "acquired")
        samples = [e for e in a_events if e["ev"] == "sample"]
        before = [s for s in samples if s["t1"] < t_stop]
        after = [s for s in samples if s["t0"] > t_cont]
        # A's own deadline: the send of its last successful write plus ttl (renewals move it)
        a_deadline = max(
            [a_acq["deadline"]] + [s["deadline"] for s in samples if s["deadline"] is not None]
        )
        b_got = b_acq["t_got"]
        believed_late = [s for s in samples if s["held"] and s["t0"] >= b_got]
        past_deadline = [s for s in samples if s["held"] and s["t0"] >= s["deadline"]]
        a_end = [e["ev"] for e in a_events if e["ev"] in ("released", "lost", "release_error")]
        b_end = [e["ev"] for e in b_events if e["ev"] in ("released", "lost", "release_error")]
        print(
            f"\n[paused holder ttl={ttl}] A token {a_acq['token']}, B token {b_acq['token']}; "
            f"A paused {t_cont - t_stop:.2f}s; A's deadline {a_deadline - t_stop:+.3f}s from "
            f"the pause; B acquired {b_got - a_deadline:+.3f}s after A's deadline and "
            f"{b_got - t_stop:.2f}s after the pause; A read held=True "
            f"{sum(s['held'] for s in before)} times before the pause, "
            f"{sum(s['held'] for s in after)} of {len(after)} after "
            f"resuming, {len(believed_late)} after B acquired; A's release: {a_end}"
        )

        # then A believed it held the lock before the pause, and never after B acquired it
        assert any(s["held"] for s in before), "A never read held=True before the pause"
        assert not believed_late, f"A read held=True after B acquired at {b_got}: {believed_late}"
        # and `held` never outlived A's own deadline (last successful write's send + ttl)
        assert not past_deadline, f"held=True past the holder's deadline: {past_deadline}"
        # and the server freed A's lease no earlier than A's own deadline
        assert b_got >= a_deadline, (
            f"B acquired {a_deadline - b_got:.3f}s before A's deadline: the server freed the "
            "lease before the holder stopped counting on it"
        )
        # and A, resumed, knows it lost the lock: held is False and release raises
        assert after and not any(s["held"] for s in after)
        assert a_end == ["lost"], a_events[-3:]
        # and B's fencing token is larger, and B released normally
        assert b_acq["token"] > a_acq["token"]
        assert b_end == ["released"], b_events[-3:]


# -- 2. the rate limiter ----------------------------------------------------------------------


def _admissions(path: Path) -> list[float]:
    return [float(line.split()[1]) for line in _lines(path) if line.startswith("a ")]


async def test_the_limiter_never_over_admits_during_a_node_kill(
    cluster: jsflow.LocalCluster, tmp_path: Path
) -> None:
    rate, burst, workers = 20, 20, 4
    stream = f"KV_{LIMITS_BUCKET}"
    async with asyncio.timeout(75):
        await cluster.wait_jetstream_ready()
        async with await connect(cluster) as client:
            # given the R3 limiter bucket and 4 processes sharing one limiter key
            probe = client.rate_limiter(_uniq("probe"), 100)
            assert (await retry(lambda: probe.try_acquire("p"))).allowed
            assert await retry(lambda: replicas(client, stream)) == 3
            name = _uniq("limit")
            go, stop = tmp_path / "go", tmp_path / "stop"
            outs = [tmp_path / f"l{i}.out" for i in range(workers)]
            logs = [tmp_path / f"l{i}.log" for i in range(workers)]
            procs: list[asyncio.subprocess.Process] = []
            victim: int | None = None
            try:
                for out, log in zip(outs, logs, strict=True):
                    procs.append(
                        await _spawn(
                            _LIMITER,
                            ",".join(cluster.urls),
                            name,
                            "k",
                            str(rate),
                            str(burst),
                            str(out),
                            str(go),
                            str(stop),
                            log=log,
                        )
                    )
                ready = await wait_for(
                    lambda: (
                        all(_lines(o)[:1] == ["ready"] for o in outs)
                        or any(p.returncode is not None for p in procs)
                    ),
                    30,
                )
                assert ready and all(p.returncode is None for p in procs), [
                    _text(log)[-2000:] for log in logs
                ]
                await healed(client, stream)

                # when they call try_acquire in a loop and the bucket's leader is killed at ~2s
                go.touch()
                t_go = time.time()
                await asyncio.sleep(2.0)
                victim = killed = await retry(lambda: leader(client, stream))
                t_kill = time.time()
                cluster.servers[victim].kill()
                await asyncio.sleep(1.5)
                await restart(cluster, victim)
                victim = None

                def admitted_after_kill() -> int:
                    return sum(1 for o in outs for t in _admissions(o) if t > t_kill)

                # then the processes admit again (bounded: an election takes seconds)
                resumed = await wait_for(lambda: admitted_after_kill() >= 10, 30)
                await asyncio.sleep(1.5)
                stop.touch()
                t_stop = time.time()
                await asyncio.wait_for(asyncio.gather(*(p.wait() for p in procs)), 20)
            finally:
                stop.touch()
                await _reap(procs)
                if victim is not None and not cluster.servers[victim].running:
                    await restart(cluster, victim)
            await healed(client, stream)

        per_process = [_admissions(o) for o in outs]
        times = sorted(itertools.chain.from_iterable(per_process))
        ends = [next((ln for ln in _lines(o) if ln.startswith("end ")), "end ? ? ?") for o in outs]
        errors = Tally(ln.split()[2] for o in outs for ln in _lines(o) if ln.startswith("e "))
        # GCRA admits at most `burst` at once, then `rate` per second: in any window of
        # `w` seconds at most burst + rate * w units. Every 1-second sliding window:
        window = 1.0
        bound_1s = burst + rate * window
        j = 0
        worst_1s = 0
        for i, start in enumerate(times):
            j = max(j, i)
            while j + 1 < len(times) and times[j + 1] <= start + window:
                j += 1
            worst_1s = max(worst_1s, j - i + 1)
        # and every window whatever its length (between any two admissions, both included),
        # up to float rounding: the library keeps GCRA's TAT in Unix seconds, so each
        # admission may add up to half an ulp of the time (~1.2e-7 s) less than per/rate
        # (see test_a_fast_limiter_admits_at_most_its_burst_at_once).
        worst_excess = worst_beyond_rounding = -math.inf
        for i in range(len(times)):
            for k in range(i, len(times)):
                units = k - i + 1
                excess = units - (burst + rate * (times[k] - times[i]))
                rounding = units * rate * math.ulp(times[k]) / 2
                worst_excess = max(worst_excess, excess)
                worst_beyond_rounding = max(worst_beyond_rounding, excess - rounding)
        after_kill = [t for t in times if t > t_kill]
        stall = after_kill[0] - t_kill if after_kill else float("inf")
        gaps = [y - x for x, y in itertools.pairwise([t_kill, *after_kill])]
        span = t_stop - t_go
        print(
            f"\n[limiter] node jsflow-n{killed} killed; {len(times)} admitted in {span:.1f}s "
            f"by {workers} processes "
            f"({', '.join(str(len(p)) for p in per_process)}; ends: {ends}), "
            f"{errors.total()} decisions failed during the failover {dict(errors)}; "
            f"worst 1s window {worst_1s} (bound {bound_1s:g}), over-admissions "
            f"{max(0, worst_1s - int(bound_1s))}; worst excess over burst + rate*t of any "
            f"window {worst_excess:+.6f} units ({worst_beyond_rounding:+.6f} beyond float "
            f"rounding); "
            f"total bound {burst + rate * span:.0f}; kill -> next admission {stall:.2f}s, "
            f"longest gap after the kill {max(gaps, default=0.0):.2f}s"
        )
        assert resumed, f"only {len(after_kill)} admissions after the kill"
        assert worst_1s <= bound_1s, f"{worst_1s} admissions in one second (bound {bound_1s})"
        assert worst_beyond_rounding <= 0, f"a window admitted {worst_excess:.6f} over its bound"
        assert len(times) <= burst + rate * span + 1e-6


async def _admitted_at_one_instant(
    client: jsflow.Client, rate: float, burst: int, tries: int
) -> int:
    """How many of ``tries`` calls at one frozen clock reading a limiter admits."""
    frozen = time.time()
    limiter = client.rate_limiter(_uniq("fast"), rate, per=1.0, burst=burst, clock=lambda: frozen)
    admitted = 0
    for _ in range(tries):
        decision = await retry(lambda: limiter.try_acquire("k"))
        admitted += decision.allowed
    return admitted


async def test_a_fast_limiter_admits_at_most_its_burst_at_once(
    cluster: jsflow.LocalCluster,
) -> None:
    async with asyncio.timeout(60):
        await cluster.wait_jetstream_ready()
        async with await connect(cluster) as client:
            # given limiters whose clock is frozen: no time passes between their decisions
            # when each is asked more times than its burst, then it admits exactly its burst
            slow = await _admitted_at_one_instant(client, 20, 20, 30)
            fast = await _admitted_at_one_instant(client, 1_000_000, 100, 130)
            print(f"\n[limiter at one instant] 20/s burst 20: {slow}; 1e6/s burst 100: {fast}")
            assert slow == 20
            assert fast == 100


# -- 3. tasks ---------------------------------------------------------------------------------


def _executions(
    logs: list[Path],
) -> tuple[Tally[str], Tally[str], dict[str, set[str]], list[float]]:
    """Starts and completions per task id, the pids that ran each, and every start time."""
    starts: Tally[str] = Tally()
    dones: Tally[str] = Tally()
    pids: dict[str, set[str]] = {}
    start_times: list[float] = []
    for log in logs:
        for line in _lines(log):
            parts = line.split()
            if len(parts) != 5 or parts[0] not in ("start", "done"):
                continue
            kind, task_id, pid, _attempt, stamp = parts
            if kind == "start":
                starts[task_id] += 1
                pids.setdefault(task_id, set()).add(pid)
                start_times.append(float(stamp))
            else:
                dones[task_id] += 1
    return starts, dones, pids, start_times


async def _completed_events(client: jsflow.Client, token: str) -> dict[str, int]:
    info = await client.js.stream_info(TASK_STREAM, subjects_filter=f"task.completed.{token}.>")
    prefix = f"task.completed.{token}."
    return {s.removeprefix(prefix): c for s, c in (info.state.subjects or {}).items()}


async def test_tasks_survive_a_worker_sigkill_and_a_node_kill(
    cluster: jsflow.LocalCluster, tmp_path: Path
) -> None:
    n = 100
    async with asyncio.timeout(100):
        await cluster.wait_jetstream_ready()
        async with await connect(cluster) as client:
            # given an app on R3 streams with 100 tasks submitted
            app = jsflow.App(client, _uniq("failover"))

            @app.task(name="work", retries=3, backoff=0.1)
            async def work(i: int) -> int:  # runs in the worker processes
                raise AssertionError("not run here")

            backend = await retry(app.backend)
            assert await retry(lambda: replicas(client, TASK_STREAM)) == 3
            states_stream = f"KV_{state_bucket(app.scope)}"
            assert await retry(lambda: replicas(client, states_stream)) == 3
            token = task_token(app.scope, "work")

            # every revision of every task state, watched from here (dedupe by revision)
            succeeded: dict[str, set[int]] = {}
            succeeded_at: dict[str, float] = {}

            async def watch_states() -> None:
                async with backend.store.store.watch(">") as changes:
                    async for change in changes:
                        if change.value is None:
                            continue
                        info = jsflow.TaskInfo.from_state(change.value, change.revision)
                        if info.status is jsflow.TaskStatus.SUCCEEDED:
                            succeeded.setdefault(change.key, set()).add(change.revision)
                            succeeded_at.setdefault(change.key, time.time())

            watcher = asyncio.create_task(watch_states())
            run = uuid.uuid4().hex[:8]
            ids = [f"t{i}-{run}" for i in range(n)]
            handles: dict[str, jsflow.TaskHandle[Any]] = {}
            for i, task_id in enumerate(ids):
                handles[task_id] = await retry(
                    lambda i=i, task_id=task_id: work.submit_with((i,), task_id=task_id),
                    attempts=200,
                )
            await healed(client, TASK_STREAM)

            # and two worker processes, 4 slots each
            names = ("a", "b")
            logs = {w: tmp_path / f"{w}.tasks" for w in names}
            outs = {w: tmp_path / f"{w}.log" for w in names}
            ready = {w: tmp_path / f"{w}.ready" for w in names}
            procs: dict[str, asyncio.subprocess.Process] = {}
            victim: int | None = None
            try:
                for w in names:
                    procs[w] = await _spawn(
                        _WORKER,
                        ",".join(cluster.urls),
                        app.name,
                        "4",
                        "5",
                        str(logs[w]),
                        str(ready[w]),
                        log=outs[w],
                    )
                both_ready = await wait_for(
                    lambda: (
                        all(r.exists() for r in ready.values())
                        or any(p.returncode is not None for p in procs.values())
                    ),
                    40,
                )
                assert both_ready and all(p.returncode is None for p in procs.values()), {
                    w: _text(outs[w])[-2000:] for w in names
                }

                def done_count() -> int:
                    return sum(_executions(list(logs.values()))[1].values())

                assert await wait_for(lambda: done_count() >= 30, 30), "no progress"
                # when worker A is SIGKILLed and the node leading the task stream is killed
                procs["a"].kill()
                t_worker_kill = time.time()
                at_kill = done_count()
                victim = killed = await retry(lambda: leader(client, TASK_STREAM))
                t_kill = time.time()
                cluster.servers[victim].kill()
                # and restarted once B made progress again (or after a bound)
                await wait_for(
                    lambda: sum(1 for t in succeeded_at.values() if t > t_kill) >= 10, 15
                )
                await restart(cluster, victim)
                victim = None

                # then every task finishes with its result: none is lost
                deadline = time.monotonic() + 50
                outcomes = await asyncio.gather(*(outcome(handles[t], deadline) for t in ids))

                # and every terminal state gets its terminal event (a missing one is
                # republished when the unacked request comes back: bounded wait)
                events: dict[str, int] = {}

                async def announced() -> bool:
                    events.clear()
                    try:
                        events.update(await _completed_events(client, token))
                    except TRANSIENT:
                        return False
                    return set(ids) <= set(events)

                for _ in range(120):
                    if await announced():
                        break
                    await asyncio.sleep(0.25)
                infos = [await retry(lambda t=t: backend.store.info(t)) for t in ids]
            finally:
                await _reap(list(procs.values()))
                if victim is not None and not cluster.servers[victim].running:
                    await restart(cluster, victim)
                watcher.cancel()
                await asyncio.gather(watcher, return_exceptions=True)
            await healed(client, TASK_STREAM)

        lost = {t: o for i, (t, o) in enumerate(zip(ids, outcomes, strict=True)) if o != i * 2}
        starts, dones, pids, start_times = _executions(list(logs.values()))
        started_after = [x - t_kill for x in sorted(start_times) if x > t_kill]
        duplicates = sum(c - 1 for c in starts.values() if c > 1)
        duplicate_completions = sum(c - 1 for c in dones.values() if c > 1)
        by_both = sum(1 for p in pids.values() if len(p) > 1)
        same_worker = sum(starts[t] - len(p) for t, p in pids.items())
        states = {t: i for t, i in zip(ids, infos, strict=True)}
        terminal = {t for t, i in states.items() if i is not None and i.status.terminal}
        unannounced = sorted(terminal - set(events))
        twice_announced = {t: c for t, c in events.items() if c != 1}
        twice_succeeded = {t: sorted(r) for t, r in succeeded.items() if len(r) > 1}
        finished = sorted(i.finished_at for i in infos if i is not None and i.finished_at)
        after = [x for x in finished if x > t_kill]
        first_after = after[0] - t_kill if after else float("inf")
        longest_gap = max((y - x for x, y in itertools.pairwise([t_kill, *after])), default=0.0)
        print(
            f"\n[tasks] {n} tasks, {at_kill} done when worker A was SIGKILLed; node "
            f"jsflow-n{killed} killed {t_kill - t_worker_kill:.2f}s "
            f"later; lost {len(lost)}; duplicate executions {duplicates} "
            f"({duplicate_completions} ran to the end twice, {by_both} tasks ran in both "
            f"workers, {same_worker} re-runs in the same worker); "
            f"SUCCEEDED records twice {len(twice_succeeded)} (watch saw {len(succeeded)}); "
            f"terminal without event {len(unannounced)}; completed events twice "
            f"{len(twice_announced)}; kill -> next success {first_after:.2f}s, -> next start "
            f"{started_after[0] if started_after else math.inf:.2f}s, longest gap between "
            f"successes after the kill {longest_gap:.2f}s"
        )
        assert not lost, f"{len(lost)} of {n} tasks did not succeed: {lost}"
        assert all(dones[t] >= 1 for t in ids), "a task succeeded that no worker ran"
        assert not twice_succeeded, f"tasks with two SUCCEEDED records: {twice_succeeded}"
        assert not unannounced, f"{len(unannounced)} terminal tasks lack their event"
        assert not twice_announced, f"tasks with more than one completed event: {twice_announced}"
