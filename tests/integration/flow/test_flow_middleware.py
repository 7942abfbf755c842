"""Each middleware, unit-level on messages and end to end in a flow on a real server."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging

import pytest
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from jsflow.flow.errors import StageTimeoutError
from jsflow.flow.handler import as_stage_fn
from jsflow.flow.message import Message
from jsflow.flow.metrics import FlowMetrics
from jsflow.flow.middleware import (
    Dedupe,
    DedupeMark,
    Logging,
    Metrics,
    RateLimit,
    Retry,
    Timeout,
    Tracing,
)
from jsflow.flow.pipeline import FlowHandler
from jsflow.flow.sink import StreamSink
from jsflow.flow.source import StreamSource
from tests.test_flow_helpers import eventually, publish_json, settled, stream_msgs, unique

_EXPORTER = InMemorySpanExporter()


def _msg(data=1, **kw) -> Message[int]:
    return Message(data=data, subject="s", id=kw.pop("id", "m-1"), correlation_id="c-1", **kw)


async def test_timeout_fails_a_slow_stage():
    # given a stage slower than its timeout
    async def slow(msg):
        await asyncio.sleep(5)

    stage = Timeout(0.05)(as_stage_fn(slow))
    # when it runs, then it fails with StageTimeoutError naming the stage
    with pytest.raises(StageTimeoutError) as info:
        await stage(_msg())
    assert info.value.stage == "slow"


async def test_retry_reruns_in_place_then_gives_up():
    # given a stage failing twice, then succeeding
    calls = []

    async def flaky(msg):
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError("transient")
        return "ok"

    assert await Retry(max_retries=2, initial_interval=0.001)(as_stage_fn(flaky))(_msg()) == "ok"
    # when retries are fewer than failures, then the last error is raised
    calls.clear()
    with pytest.raises(ConnectionError):
        await Retry(max_retries=1, initial_interval=0.001)(as_stage_fn(flaky))(_msg())
    assert len(calls) == 2


async def test_retry_only_retries_listed_errors():
    calls = []

    async def bad(msg):
        calls.append(1)
        raise KeyError("not retryable")

    with pytest.raises(KeyError):
        await Retry(max_retries=3, initial_interval=0.001, retry_on=(OSError,))(as_stage_fn(bad))(
            _msg()
        )
    assert len(calls) == 1


@given(
    st.integers(min_value=1, max_value=30),
    st.floats(min_value=0, max_value=2),
    st.floats(min_value=1, max_value=4),
    st.floats(min_value=0, max_value=10),
)
def test_retry_delay_is_bounded_and_monotonic(attempt, initial, multiplier, cap):
    # given any retry options, then delays never exceed the cap and never shrink
    retry = Retry(initial_interval=initial, multiplier=multiplier, max_interval=cap)
    assert 0 <= retry.delay(attempt) <= cap
    assert retry.delay(attempt) <= retry.delay(attempt + 1) or retry.delay(attempt) == cap


async def test_dedupe_filters_a_repeated_key(jsflow_client, jsflow_bucket):
    # given a deduped stage with a KV store
    store = await jsflow_client.object_store(jsflow_bucket, DedupeMark)
    calls = []

    async def effect(msg):
        calls.append(msg.data)
        return msg.data

    stage = Dedupe(store, key=lambda m: str(m.data))(as_stage_fn(effect))
    # when the same key comes twice, then the second is filtered
    assert await stage(_msg(7)) == 7
    assert await stage(_msg(7, id="m-2")) is None
    assert calls == [7]


async def test_dedupe_releases_the_claim_when_the_stage_fails(jsflow_client, jsflow_bucket):
    # given a deduped stage failing once
    store = await jsflow_client.object_store(jsflow_bucket, DedupeMark)
    calls = []

    async def once_broken(msg):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("first")
        return "done"

    stage = Dedupe(store)(as_stage_fn(once_broken))
    with pytest.raises(RuntimeError):
        await stage(_msg())
    # when the message comes back, then it runs again
    assert await stage(_msg()) == "done"


async def test_tracing_spans_per_stage_and_context_in_headers(jsflow_client):
    # given an SDK tracer provider recording spans
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):  # another test may have installed one
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    if not getattr(provider, "_flow_test_exporter", False):
        provider.add_span_processor(SimpleSpanProcessor(_EXPORTER))
        provider._flow_test_exporter = True  # type: ignore[attr-defined]
    _EXPORTER.clear()
    name = unique("trace")

    async def first(msg):
        return msg.data + 1

    async def second(msg):
        return msg.data * 2

    flow = FlowHandler(
        jsflow_client,
        source=StreamSource(f"IN_{name}", f"in.{name}", f"d_{name}", int, fetch_timeout=0.25),
        stages=[first, second],
        sink=StreamSink(f"out.{name}", stream=f"OUT_{name}"),
        middleware=[Tracing()],
    )
    async with flow:
        # when a message carrying a traceparent flows
        parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        await jsflow_client.js.publish(f"in.{name}", b"1", headers={"traceparent": parent})
        await eventually(lambda: settled(jsflow_client, f"IN_{name}", f"d_{name}"))
    # then each stage has a span in the caller's trace, and the output carries the context
    spans = [s for s in _EXPORTER.get_finished_spans() if s.name.startswith("jsflow.flow.stage")]
    assert [s.name for s in spans] == ["jsflow.flow.stage first", "jsflow.flow.stage second"]
    assert {format(s.context.trace_id, "032x") for s in spans} == {parent.split("-")[1]}
    assert spans[1].parent.span_id == spans[0].context.span_id
    out = (await stream_msgs(jsflow_client, f"OUT_{name}"))[0]
    assert json.loads(out.data) == 4
    assert out.headers["traceparent"].split("-")[2] == format(spans[1].context.span_id, "016x")


async def test_logging_binds_correlation_id(caplog):
    # given a logged stage
    async def fine(msg):
        return msg.data

    caplog.set_level(logging.DEBUG, logger="jsflow.flow")
    # when it runs, then its log line names stage and correlation id
    await Logging()(as_stage_fn(fine))(_msg())
    assert any(
        "flow.stage.done" in r.getMessage() and "correlation_id='c-1'" in r.getMessage()
        for r in caplog.records
    )


async def test_metrics_record_calls_failures_and_latency():
    # given a metrics-wrapped stage that fails on odd data
    metrics = FlowMetrics()

    async def even_only(msg):
        if msg.data % 2:
            raise ValueError("odd")
        return msg.data

    stage = Metrics(metrics)(as_stage_fn(even_only))
    for n in range(4):
        with contextlib.suppress(ValueError):
            await stage(_msg(n))
    # then the snapshot has the counts and latency observations
    snap = metrics.snapshot().stages["even_only"]
    assert (snap.calls, snap.failed, snap.latency.count) == (4, 2, 4)


async def test_rate_limit_middleware_admits_through_the_limiter(jsflow_client):
    # given a rate-limited stage
    name = unique("rl")
    calls = []

    async def work(msg):
        calls.append(msg.data)
        return msg.data

    stage = RateLimit(jsflow_client, name, rate=1000, burst=100)(as_stage_fn(work))
    # when messages pass, then each is admitted and processed
    for n in range(3):
        assert await stage(_msg(n)) == n
    assert calls == [0, 1, 2]


async def test_flow_metrics_snapshot_counts_a_run(jsflow_client):
    # given a flow with one failing message type
    name = unique("fm")

    async def stage(msg):
        if msg.data < 0:
            raise ValueError("negative")
        return msg.data

    flow = FlowHandler(
        jsflow_client,
        source=StreamSource(f"IN_{name}", f"in.{name}", f"d_{name}", int, fetch_timeout=0.25),
        stages=[stage],
        max_deliver=1,
        dead_letter=f"dl.{name}",
        dead_letter_stream=f"DL_{name}",
    )
    async with flow:
        await publish_json(jsflow_client, f"in.{name}", [1, -1, 2])
        await eventually(lambda: settled(jsflow_client, f"IN_{name}", f"d_{name}"))
    # then processed, failed and dead-lettered add up; nothing is left in flight
    snap = flow.metrics.snapshot()
    assert (snap.processed, snap.failed, snap.dead_lettered, snap.in_flight) == (2, 1, 1, 0)
    assert snap.latency.count == 2
