"""How a flow runs messages at once: the keyless pool overlaps up to its concurrency, keyed
mode keeps each key in order (across failures, dead letters and a failing key function),
and a bug in failure bookkeeping still hands the message back."""

from __future__ import annotations

import asyncio
import json
import random

from jsflow.flow.pipeline import FlowHandler
from jsflow.flow.sink import StreamSink
from tests.support.names import uniq
from tests.support.polling import eventually
from tests.support.streams import count_is, flow_source, publish_json, settled, stream_msgs


async def test_keyless_pool_runs_awaiting_stages_concurrently(jsflow_client):
    # given a keyless flow with concurrency 4 whose stage waits until 4 run at once
    name = uniq("pool")
    running = 0
    peak = 0
    four = asyncio.Event()

    async def stage(msg):
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        if running >= 4:
            four.set()
        try:
            await asyncio.wait_for(four.wait(), 10)  # hang guard only
        finally:
            running -= 1
        return msg.data

    flow = FlowHandler(
        jsflow_client,
        source=flow_source(name),
        stages=[stage],
        sink=StreamSink(f"out.{name}", stream=f"OUT_{name}"),
        concurrency=4,
    )
    async with flow:
        # when eight messages arrive
        await publish_json(jsflow_client, f"in.{name}", list(range(8)))
        await eventually(lambda: count_is(jsflow_client, f"OUT_{name}", 8))
        await eventually(lambda: settled(jsflow_client, f"IN_{name}", f"d_{name}"))
    # then four stage executions overlapped, never more than concurrency
    assert peak == 4
    assert flow.metrics.snapshot().processed == 8


async def test_keyed_mode_processes_equal_keys_in_order(jsflow_client):
    # given a keyed flow with high concurrency and random stage latency
    name = uniq("keyed")
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
        source=flow_source(name, dict),
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


async def test_unexpected_internal_error_still_naks_the_message(jsflow_client):
    # given a keyless flow whose failure bookkeeping has a bug (raises a non-jsflow error)
    name = uniq("bug")
    seen: list[int] = []

    async def fails_first(msg):
        seen.append(msg.delivery)
        if msg.delivery == 1:
            raise ValueError("first attempt")
        return msg.data

    flow = FlowHandler(
        jsflow_client,
        source=flow_source(name),
        stages=[fails_first],
        sink=StreamSink(f"out.{name}", stream=f"OUT_{name}"),
        concurrency=2,
    )

    async def buggy_fail(*args, **kwargs):
        raise RuntimeError("bookkeeping bug")

    flow._fail = buggy_fail  # type: ignore[method-assign]
    async with flow:
        # when a message fails and the failure handling itself blows up
        await publish_json(jsflow_client, f"in.{name}", [3])
        await eventually(lambda: count_is(jsflow_client, f"OUT_{name}", 1))
        await eventually(lambda: settled(jsflow_client, f"IN_{name}", f"d_{name}"))
    # then it was still nak'ed, redelivered and completed: not lost, not stuck in flight
    assert seen == [1, 2]
    snap = flow.metrics.snapshot()
    assert (snap.processed, snap.redelivered, snap.in_flight) == (1, 1, 0)


async def test_unexpected_internal_error_in_keyed_mode_still_naks_the_message(jsflow_client):
    # given a keyed flow whose failure bookkeeping has a bug, and max_deliver 1 (no retry)
    name = uniq("kbug")
    seen: list[int] = []

    async def fails_first(msg):
        seen.append(msg.delivery)
        if msg.delivery == 1:
            raise ValueError("first attempt")
        return msg.data

    flow = FlowHandler(
        jsflow_client,
        source=flow_source(name),
        stages=[fails_first],
        sink=StreamSink(f"out.{name}", stream=f"OUT_{name}"),
        key=lambda msg: "k",
        max_deliver=1,
    )
    calls = []
    original = flow._fail

    async def buggy_fail(*args, **kwargs):
        if not calls:
            calls.append(1)
            raise RuntimeError("bookkeeping bug")
        return await original(*args, **kwargs)

    flow._fail = buggy_fail  # type: ignore[method-assign]
    async with flow:
        await publish_json(jsflow_client, f"in.{name}", [3])
        await eventually(lambda: count_is(jsflow_client, f"OUT_{name}", 1))
        await eventually(lambda: settled(jsflow_client, f"IN_{name}", f"d_{name}"))
    # then the message was handed back (not held in flight forever) and completed
    assert seen == [1, 2]
    assert flow.metrics.snapshot().in_flight == 0


async def test_keyed_flow_keeps_order_across_a_failure(jsflow_client):
    # given a keyed flow whose stage fails the first two attempts of value 1
    name = uniq("kord")
    seen: list[tuple[int, int]] = []

    async def stage(msg):
        seen.append((msg.data, msg.delivery))
        if msg.data == 1 and msg.delivery < 3:
            raise ValueError("not yet")
        return msg.data

    flow = FlowHandler(
        jsflow_client,
        source=flow_source(name),
        stages=[stage],
        sink=StreamSink(f"out.{name}", stream=f"OUT_{name}"),
        key=lambda msg: "same",
        max_deliver=5,
        backoff=[0.05],
    )
    async with flow:
        # when 0..4 of one key arrive
        await publish_json(jsflow_client, f"in.{name}", [0, 1, 2, 3, 4])
        await eventually(lambda: count_is(jsflow_client, f"OUT_{name}", 5))
        await eventually(lambda: settled(jsflow_client, f"IN_{name}", f"d_{name}"))
    # then 1 was retried in place (attempts 1..3) before 2, and the output is in order
    assert seen == [(0, 1), (1, 1), (1, 2), (1, 3), (2, 1), (3, 1), (4, 1)]
    assert [json.loads(m.data) for m in await stream_msgs(jsflow_client, f"OUT_{name}")] == [
        0,
        1,
        2,
        3,
        4,
    ]
    assert flow.metrics.snapshot().failed == 2


async def test_keyed_flow_dead_letters_after_max_deliver_then_moves_on(jsflow_client):
    # given a keyed flow where value 1 always fails
    name = uniq("kdead")
    seen: list[int] = []

    async def stage(msg):
        seen.append(msg.data)
        if msg.data == 1:
            raise ValueError("never")
        return msg.data

    flow = FlowHandler(
        jsflow_client,
        source=flow_source(name),
        stages=[stage],
        key=lambda msg: "k",
        max_deliver=3,
        backoff=[0.01],
        dead_letter=f"dl.{name}",
        dead_letter_stream=f"DL_{name}",
    )
    async with flow:
        await publish_json(jsflow_client, f"in.{name}", [0, 1, 2])
        await eventually(lambda: count_is(jsflow_client, f"DL_{name}", 1))
        await eventually(lambda: settled(jsflow_client, f"IN_{name}", f"d_{name}"))
    # then 1 had three attempts, was dead-lettered with delivery 3, and 2 came after it
    assert seen == [0, 1, 1, 1, 2]
    dead = (await stream_msgs(jsflow_client, f"DL_{name}"))[0]
    assert dead.headers["Jsflow-Delivery"] == "3"
    assert dead.headers["Jsflow-Error-Type"] == "ValueError"


async def test_failing_key_function_fails_the_message_instead_of_running_unordered(
    jsflow_client,
):
    # given a key function that raises for value 1
    name = uniq("kfn")
    seen: list[int] = []

    def key(msg):
        if msg.data == 1:
            raise KeyError("no key")
        return "k"

    async def stage(msg):
        seen.append(msg.data)
        return msg.data

    flow = FlowHandler(
        jsflow_client,
        source=flow_source(name),
        stages=[stage],
        key=key,
        max_deliver=1,
        dead_letter=f"dl.{name}",
        dead_letter_stream=f"DL_{name}",
    )
    async with flow:
        await publish_json(jsflow_client, f"in.{name}", [0, 1, 2])
        await eventually(lambda: count_is(jsflow_client, f"DL_{name}", 1))
        await eventually(lambda: settled(jsflow_client, f"IN_{name}", f"d_{name}"))
    # then 1 never ran a stage: it was dead-lettered from stage "key"
    assert seen == [0, 2]
    dead = (await stream_msgs(jsflow_client, f"DL_{name}"))[0]
    assert dead.headers["Jsflow-Stage"] == "key"
    assert dead.data == b"1"
