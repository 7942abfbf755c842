"""Observing jsflow: one trace from submit to a worker in another process and through a
flow in another process, OpenTelemetry metrics of every layer, worker log lines and
remote tracebacks."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import metrics, propagate, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import jsflow
from jsflow.tasks.lifecycle import MAX_TRACEBACK
from jsflow.tasks.stats import task_stats

CHILD = Path(__file__).with_name("_otel_child.py")
_SPANS = InMemorySpanExporter()
_READER = InMemoryMetricReader()


def _tracing() -> InMemorySpanExporter:
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):  # another test may have installed one
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    if not getattr(provider, "_observability_exporter", False):
        provider.add_span_processor(SimpleSpanProcessor(_SPANS))
        provider._observability_exporter = True  # type: ignore[attr-defined]
    _SPANS.clear()
    return _SPANS


def _metrics() -> InMemoryMetricReader:
    if not isinstance(metrics.get_meter_provider(), MeterProvider):
        metrics.set_meter_provider(MeterProvider(metric_readers=[_READER]))
    return _READER


def _points(reader: InMemoryMetricReader, name: str) -> list[Any]:
    data = reader.get_metrics_data()
    found = []
    for resource in data.resource_metrics if data else []:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name == name:
                    found.extend(metric.data.data_points)
    return found


def _total(reader: InMemoryMetricReader, name: str, **attrs: str) -> float:
    return sum(
        p.value if hasattr(p, "value") else p.count
        for p in _points(reader, name)
        if all(p.attributes.get(k) == v for k, v in attrs.items())
    )


async def _child(*args: str) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(CHILD), *args, stdout=asyncio.subprocess.PIPE
    )
    assert proc.stdout is not None
    assert (await proc.stdout.readline()).strip() == b"ready"
    return proc


def _read_spans(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


async def _spans_named(path: Path, name: str) -> list[dict[str, Any]]:
    """The other process's finished spans called ``name`` (it writes a span when it ends,
    a moment after the work it covers is visible here)."""
    for _ in range(200):
        found = [s for s in _read_spans(path) if s["name"] == name]
        if found:
            return found
        await asyncio.sleep(0.05)
    return []


async def test_one_trace_spans_the_submitter_and_a_worker_in_another_process(
    jsflow_server: jsflow.EmbeddedServer, jsflow_client: jsflow.Client, tmp_path: Path
) -> None:
    spans = _tracing()
    name = f"otel{uuid.uuid4().hex[:6]}"
    app = jsflow.App(jsflow_client, name)

    @app.task
    async def traced(n: int) -> int:
        raise AssertionError("runs in the other process")

    child_spans = tmp_path / "spans.jsonl"
    proc = await _child("worker", jsflow_server.url, name, str(child_spans), "30")
    try:
        async with asyncio.timeout(30):
            with trace.get_tracer("test").start_as_current_span("checkout") as root:
                handle = await traced.submit(21)
            assert await handle.result(timeout=20) == 42
            kinds = [e.kind async for e in handle.events()]
            assert kinds[-1] == "completed"
            theirs = await _spans_named(child_spans, "jsflow.tasks.execute")
    finally:
        proc.terminate()
        await proc.wait()
    trace_id = format(root.get_span_context().trace_id, "032x")
    ours = {s.name: s for s in spans.get_finished_spans()}
    submit = ours["jsflow.tasks.submit"]
    assert format(submit.context.trace_id, "032x") == trace_id
    assert theirs, "the worker recorded no execute span"
    assert theirs[0]["trace_id"] == trace_id
    assert theirs[0]["parent"] == format(submit.context.span_id, "016x")


async def test_one_trace_spans_a_producer_and_a_flow_in_another_process(
    jsflow_server: jsflow.EmbeddedServer, jsflow_client: jsflow.Client, tmp_path: Path
) -> None:
    _tracing()
    name = f"otelf{uuid.uuid4().hex[:6]}"
    child_spans = tmp_path / "spans.jsonl"
    proc = await _child("flow", jsflow_server.url, name, str(child_spans), "30")
    try:
        async with asyncio.timeout(30):
            with trace.get_tracer("test").start_as_current_span("produce") as root:
                headers: dict[str, str] = {}
                propagate.inject(headers)
                await jsflow_client.js.publish(f"in.{name}", b"1", headers=headers)
            while True:
                try:
                    out = await jsflow_client.js.get_msg(f"OUT_{name}", seq=1)
                    break
                except Exception:
                    await asyncio.sleep(0.1)
            theirs = await _spans_named(child_spans, "jsflow.flow.message")
    finally:
        proc.terminate()
        await proc.wait()
    trace_id = format(root.get_span_context().trace_id, "032x")
    assert json.loads(out.data or b"0") == 2
    assert (out.headers or {})["traceparent"].split("-")[1] == trace_id
    assert theirs and theirs[0]["trace_id"] == trace_id
    assert theirs[0]["parent"] == format(root.get_span_context().span_id, "016x")
    # the output continues from the flow's span in the other process
    assert (out.headers or {})["traceparent"].split("-")[2] == theirs[0]["span_id"]


async def test_tasks_flows_locks_limiters_and_stores_record_metrics(
    jsflow_client: jsflow.Client,
) -> None:
    reader = _metrics()
    name = f"met{uuid.uuid4().hex[:6]}"
    app = jsflow.App(jsflow_client, name)
    calls = 0

    @app.task(retries=1, backoff=0.05)
    async def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("first try")
        return "ok"

    async with asyncio.timeout(30):
        async with app.worker():
            assert await (await flaky.submit()).result(timeout=20) == "ok"
        lock = jsflow_client.lock(f"{name}.lock", bucket=f"{name}_locks")
        async with lock:
            pass
        limiter = jsflow_client.rate_limiter(f"{name}-lim", 1, per=60)
        assert (await limiter.try_acquire("k")).allowed
        assert not (await limiter.try_acquire("k")).allowed
        store = await jsflow_client.object_store(f"{name}_kv", int)
        await store.put("n", 0)
        await asyncio.gather(*(store.update("n", lambda v: v + 1) for _ in range(10)))
    assert _total(reader, "jsflow.tasks.submitted", task="flaky") == 1
    assert _total(reader, "jsflow.tasks.started", task="flaky") == 2
    assert _total(reader, "jsflow.tasks.retried", task="flaky") == 1
    assert _total(reader, "jsflow.tasks.succeeded", task="flaky") == 1
    assert _total(reader, "jsflow.tasks.run_duration", task="flaky") == 2
    assert _total(reader, "jsflow.tasks.queue_wait", task="flaky") == 1
    assert _total(reader, "jsflow.lock.acquisitions", bucket=f"{name}_locks") == 1
    assert _total(reader, "jsflow.limiter.decisions", limiter=f"{name}-lim", allowed="true") == 1
    assert _total(reader, "jsflow.limiter.decisions", limiter=f"{name}-lim", allowed="false") == 1
    assert _total(reader, "jsflow.store.updates", bucket=f"{name}_kv") == 10
    # ten concurrent updates of one key were combined into fewer writes
    assert 1 <= _total(reader, "jsflow.store.batch_size", bucket=f"{name}_kv") < 10


async def test_a_worker_logs_each_outcome_with_its_duration_and_error(
    jsflow_client: jsflow.Client, caplog: pytest.LogCaptureFixture
) -> None:
    app = jsflow.App(jsflow_client, f"log{uuid.uuid4().hex[:6]}")

    @app.task
    async def quick() -> int:
        return 1

    @app.task(retries=0)
    async def broken() -> int:
        raise ValueError("no such order")

    caplog.set_level(logging.INFO, logger="jsflow")
    async with asyncio.timeout(30), app.worker():
        ok = await quick.submit()
        bad = await broken.submit()
        assert await ok.result(timeout=20) == 1
        with pytest.raises(jsflow.TaskFailedError):
            await bad.result(timeout=20)
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("jsflow.tasks")]
    started = [line for line in lines if "tasks.started" in line]
    succeeded = [line for line in lines if "tasks.succeeded" in line]
    failed = [line for line in lines if "tasks.failed" in line]
    assert any(ok.id in line for line in started) and any(bad.id in line for line in started)
    assert any(ok.id in line and "duration_ms" in line for line in succeeded)
    assert any(bad.id in line and "no such order" in line for line in failed)


async def test_a_failed_task_carries_its_bounded_remote_traceback(
    jsflow_client: jsflow.Client,
) -> None:
    app = jsflow.App(jsflow_client, f"tb{uuid.uuid4().hex[:6]}")

    def deep(n: int) -> None:
        if n == 0:
            raise KeyError("missing-sku")
        deep(n - 1)

    @app.task(retries=0)
    async def charge(depth: int) -> None:
        deep(depth)

    async with asyncio.timeout(30), app.worker():
        shallow = await charge.submit(1)
        huge = await charge.submit(900)  # a traceback far over the bound
        with pytest.raises(jsflow.TaskFailedError) as caught:
            await shallow.result(timeout=20)
        with pytest.raises(jsflow.TaskFailedError) as caught_huge:
            await huge.result(timeout=20)
    error = caught.value
    assert "missing-sku" in error.traceback and "in deep" in error.traceback
    assert "remote traceback" in str(error)
    assert len(caught_huge.value.traceback.encode()) <= MAX_TRACEBACK
    assert caught_huge.value.traceback.rstrip().endswith("KeyError: 'missing-sku'")


async def test_stats_come_from_the_server_not_from_one_process(
    jsflow_server: jsflow.EmbeddedServer, jsflow_client: jsflow.Client
) -> None:
    app = jsflow.App(jsflow_client, f"kpi{uuid.uuid4().hex[:6]}")
    attempts: dict[int, int] = {}

    @app.task(retries=1, backoff=0.05)
    async def work(n: int) -> int:
        attempts[n] = attempts.get(n, 0) + 1
        if n == 0 and attempts[n] == 1:
            raise RuntimeError("once")
        if n == 1:
            raise ValueError("always")
        return n

    async with asyncio.timeout(30):
        async with app.worker():
            handles = [await work.submit(n) for n in range(4)]
            for handle in handles:
                with contextlib.suppress(jsflow.TaskFailedError):
                    await handle.result(timeout=20)
        # a second client, as another process would: nothing shared in memory
        async with await jsflow.connect(jsflow_server.url) as other:
            other_app = jsflow.App(other, app.name)
            (row,) = await task_stats(await other_app.backend(), window=60)
    assert (row.name, row.total, row.succeeded, row.failed) == ("work", 4, 3, 1)
    assert row.retry_rate == 0.5  # n=0 and n=1 took two attempts
    assert row.dead_letter_rate == 0.25
    assert row.finished_in_window == 4 and row.throughput_per_s > 0
    assert row.lag == 0 and row.ack_pending == 0
    assert 0 <= row.run_time_p50 <= row.run_time_p95
    assert row.completion_p95 >= row.queue_wait_p95


def test_prometheus_export_serves_jsflow_instruments() -> None:
    # a worker process: `jsflow worker --metrics-port N` does this
    script = (
        "import asyncio, socket, urllib.request\n"
        "from jsflow.observability import enable_prometheus, instruments, prometheus_text\n"
        "s = socket.socket(); s.bind(('127.0.0.1', 0)); port = s.getsockname()[1]; s.close()\n"
        "enable_prometheus(port)\n"
        "instruments().tasks_submitted.add(3, {'task': 'charge'})\n"
        "body = urllib.request.urlopen(f'http://127.0.0.1:{port}/metrics').read().decode()\n"
        "assert 'jsflow_tasks_submitted' in body and 'charge' in body, body\n"
        "assert 'jsflow_tasks_submitted' in prometheus_text()\n"
        "print('ok')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0 and "ok" in result.stdout, result.stdout + result.stderr
