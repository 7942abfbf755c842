"""Middleware on a real server: Dedupe with its store, Tracing and Metrics across a flow,
RateLimit through the limiter (on messages alone: unit/test_middleware.py)."""

from __future__ import annotations

import json

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from jsflow.flow.handler import as_stage_fn
from jsflow.flow.middleware import (
    Dedupe,
    DedupeMark,
    RateLimit,
    Tracing,
)
from jsflow.flow.pipeline import FlowHandler
from jsflow.flow.sink import StreamSink
from tests.support.names import uniq
from tests.support.polling import eventually
from tests.support.streams import flow_source, message, publish_json, settled, stream_msgs

_EXPORTER = InMemorySpanExporter()


async def test_dedupe_filters_a_repeated_key(jsflow_client, jsflow_bucket):
    # given a deduped stage with a KV store
    store = await jsflow_client.object_store(jsflow_bucket, DedupeMark)
    calls = []

    async def effect(msg):
        calls.append(msg.data)
        return msg.data

    stage = Dedupe(store, key=lambda m: str(m.data))(as_stage_fn(effect))
    # when the same key comes twice, then the second is filtered
    assert await stage(message(7)) == 7
    assert await stage(message(7, id="m-2")) is None
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
        await stage(message())
    # when the message comes back, then it runs again
    assert await stage(message()) == "done"


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
    name = uniq("trace")

    async def first(msg):
        return msg.data + 1

    async def second(msg):
        return msg.data * 2

    flow = FlowHandler(
        jsflow_client,
        source=flow_source(name),
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


async def test_rate_limit_middleware_admits_through_the_limiter(jsflow_client):
    # given a rate-limited stage
    name = uniq("rl")
    calls = []

    async def work(msg):
        calls.append(msg.data)
        return msg.data

    stage = RateLimit(jsflow_client, name, rate=1000, burst=100)(as_stage_fn(work))
    # when messages pass, then each is admitted and processed
    for n in range(3):
        assert await stage(message(n)) == n
    assert calls == [0, 1, 2]


async def test_flow_metrics_snapshot_counts_a_run(jsflow_client):
    # given a flow with one failing message type
    name = uniq("fm")

    async def stage(msg):
        if msg.data < 0:
            raise ValueError("negative")
        return msg.data

    flow = FlowHandler(
        jsflow_client,
        source=flow_source(name),
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
