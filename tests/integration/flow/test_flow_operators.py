"""Operators over a real server: batches, split routes and merged sources (keyed ordering:
test_flow_concurrency.py; stage results without a server: unit/test_middleware.py)."""

from __future__ import annotations

import json

from jsflow.flow.operators import Batch, Split, map_
from jsflow.flow.pipeline import FlowHandler
from jsflow.flow.sink import StreamSink
from tests.support.names import uniq
from tests.support.polling import eventually
from tests.support.streams import count_is, flow_source, publish_json, settled, stream_msgs


async def test_batch_emits_lists_and_acks_members_after_output(jsflow_client):
    # given a batch of 3 feeding a sink
    name = uniq("batch")
    flow = FlowHandler(
        jsflow_client,
        source=flow_source(name, int),
        stages=[Batch(size=3, window=0.5)],
        sink=StreamSink(f"out.{name}", stream=f"OUT_{name}"),
        concurrency=8,
    )
    async with flow:
        # when 7 messages arrive
        await publish_json(jsflow_client, f"in.{name}", list(range(7)))
        await eventually(lambda: settled(jsflow_client, f"IN_{name}", f"d_{name}"))
    # then every value is in exactly one batch of at most 3, all source messages acked
    batches = [json.loads(m.data) for m in await stream_msgs(jsflow_client, f"OUT_{name}")]
    assert sorted(v for b in batches for v in b) == list(range(7))
    assert all(1 <= len(b) <= 3 for b in batches)
    assert flow.metrics.snapshot().processed == 7


async def test_batch_failure_naks_every_member(jsflow_client):
    # given a batch whose downstream stage fails the first time
    name = uniq("batchfail")
    attempts = []

    async def fail_once(msg):
        attempts.append(list(msg.data))
        if len(attempts) == 1:
            raise RuntimeError("downstream")
        return msg  # a Message passes the list on whole (a returned list would fan out)

    flow = FlowHandler(
        jsflow_client,
        source=flow_source(name, int),
        stages=[Batch(size=2, window=0.3), fail_once],
        sink=StreamSink(f"out.{name}", stream=f"OUT_{name}"),
        backoff=[0.05],
    )
    async with flow:
        await publish_json(jsflow_client, f"in.{name}", [1, 2])
        await eventually(lambda: settled(jsflow_client, f"IN_{name}", f"d_{name}"))
    # then both members came back and were batched again
    snap = flow.metrics.snapshot()
    assert snap.failed == 2 and snap.processed == 2
    msgs = await stream_msgs(jsflow_client, f"OUT_{name}")
    assert sorted(v for m in msgs for v in json.loads(m.data)) == [1, 2]


async def test_split_routes_by_predicate_with_default(jsflow_client):
    # given a split of small, big, and a default
    name = uniq("split")
    small = StreamSink(f"small.{name}", stream=f"SMALL_{name}")
    big = StreamSink(f"big.{name}", stream=f"BIG_{name}")
    rest = StreamSink(f"rest.{name}", stream=f"REST_{name}")
    split = Split([(lambda m: m.data < 10, small), (lambda m: m.data < 100, big)], default=rest)
    flow = FlowHandler(jsflow_client, source=flow_source(name, int), stages=[map_(int)], sink=split)
    async with flow:
        # when values of each range arrive
        await publish_json(jsflow_client, f"in.{name}", [1, 50, 500, 2])
        await eventually(lambda: settled(jsflow_client, f"IN_{name}", f"d_{name}"))
    # then each went to its route
    assert [json.loads(m.data) for m in await stream_msgs(jsflow_client, f"SMALL_{name}")] == [1, 2]
    assert [json.loads(m.data) for m in await stream_msgs(jsflow_client, f"BIG_{name}")] == [50]
    assert [json.loads(m.data) for m in await stream_msgs(jsflow_client, f"REST_{name}")] == [500]


async def test_merge_of_sources_into_one_sink(jsflow_client):
    # given two sources on different streams
    a, b = uniq("ma"), uniq("mb")
    out = uniq("mout")
    flow = FlowHandler(
        jsflow_client,
        source=[flow_source(a, int), flow_source(b, int)],
        stages=[map_(lambda x: x * 10)],
        sink=StreamSink(f"out.{out}", stream=f"OUT_{out}"),
    )
    async with flow:
        # when both get messages
        await publish_json(jsflow_client, f"in.{a}", [1, 2])
        await publish_json(jsflow_client, f"in.{b}", [3])
        await eventually(lambda: count_is(jsflow_client, f"OUT_{out}", 3))
    # then the sink holds all of them, with ids naming their source stream
    msgs = await stream_msgs(jsflow_client, f"OUT_{out}")
    assert sorted(json.loads(m.data) for m in msgs) == [10, 20, 30]
    assert {m.headers["Nats-Msg-Id"].split(":")[0] for m in msgs} == {f"IN_{a}", f"IN_{b}"}
