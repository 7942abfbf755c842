"""Operators over a real server: keyed ordering, batches, split and merged sources."""

from __future__ import annotations

import asyncio
import json
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jsflow.errors import ConfigError
from jsflow.flow.handler import outputs_of
from jsflow.flow.message import Message
from jsflow.flow.operators import Batch, Split, map_
from jsflow.flow.pipeline import FlowHandler
from jsflow.flow.sink import StreamSink
from jsflow.flow.source import StreamSource
from tests.test_flow_helpers import count_is, eventually, publish_json, settled, stream_msgs, unique


def _source(name: str, tp: type = dict, **kw) -> StreamSource:
    kw.setdefault("fetch_timeout", 0.25)
    return StreamSource(f"IN_{name}", f"in.{name}", f"d_{name}", tp, **kw)


async def test_keyed_mode_processes_equal_keys_in_order(jsflow_client):
    # given a keyed flow with high concurrency and random stage latency
    name = unique("keyed")
    seen: dict[str, list[int]] = {}
    active: set[str] = set()
    overlaps = []

    async def record(msg):
        k = msg.data["k"]
        if k in active:
            overlaps.append(k)
        active.add(k)
        await asyncio.sleep(random.uniform(0, 0.01))
        seen.setdefault(k, []).append(msg.data["n"])
        active.discard(k)
        return None

    flow = FlowHandler(
        jsflow_client,
        source=_source(name),
        stages=[record],
        concurrency=32,
        key=lambda msg: msg.data["k"],
    )
    values = [{"k": f"k{i % 4}", "n": i} for i in range(60)]
    async with flow:
        # when messages of four keys interleave
        await publish_json(jsflow_client, f"in.{name}", values)
        await eventually(lambda: settled(jsflow_client, f"IN_{name}", f"d_{name}"))
    # then each key saw its messages in publish order, never two at once
    assert not overlaps
    for k, ns in seen.items():
        assert ns == [v["n"] for v in values if v["k"] == k]


async def test_batch_emits_lists_and_acks_members_after_output(jsflow_client):
    # given a batch of 3 feeding a sink
    name = unique("batch")
    flow = FlowHandler(
        jsflow_client,
        source=_source(name, int),
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
    name = unique("batchfail")
    attempts = []

    async def fail_once(msg):
        attempts.append(list(msg.data))
        if len(attempts) == 1:
            raise RuntimeError("downstream")
        return msg  # a Message passes the list on whole (a returned list would fan out)

    flow = FlowHandler(
        jsflow_client,
        source=_source(name, int),
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
    name = unique("split")
    small = StreamSink(f"small.{name}", stream=f"SMALL_{name}")
    big = StreamSink(f"big.{name}", stream=f"BIG_{name}")
    rest = StreamSink(f"rest.{name}", stream=f"REST_{name}")
    split = Split([(lambda m: m.data < 10, small), (lambda m: m.data < 100, big)], default=rest)
    flow = FlowHandler(jsflow_client, source=_source(name, int), stages=[map_(int)], sink=split)
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
    a, b = unique("ma"), unique("mb")
    out = unique("mout")
    flow = FlowHandler(
        jsflow_client,
        source=[_source(a, int), _source(b, int)],
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


def test_bad_options_raise_before_any_io():
    # given/when/then: invalid configuration is refused at construction
    with pytest.raises(ConfigError):
        StreamSource("bad name", "x", "d", int)
    with pytest.raises(ConfigError):
        Batch(size=0, window=1)
    with pytest.raises(ConfigError):
        StreamSink("wild.*")
    with pytest.raises(ConfigError):
        FlowHandler(None, source=StreamSource("S", "s", "d", int), concurrency=0)  # type: ignore[arg-type]


@given(st.one_of(st.none(), st.integers(), st.lists(st.integers(), max_size=5)))
def test_outputs_of_filters_passes_or_fans_out(result):
    # given any stage result, when turned into outputs
    msg = Message(data=0, subject="s", id="x")
    outs = outputs_of(msg, result)
    # then None filters, a list fans out in order, a value passes on, ids are kept
    expected = [] if result is None else result if isinstance(result, list) else [result]
    assert [o.data for o in outs] == expected
    assert all(o.id == "x" for o in outs)
