"""FlowHandler end to end against a real nats-server: stages, sinks (two flows into one sink
stream), acks, failures and dead letters, the state store (starting and stopping:
test_flow_lifecycle.py)."""

from __future__ import annotations

import asyncio
import json

import jsflow
from jsflow.flow.operators import filter_, flat_map, map_
from jsflow.flow.pipeline import FlowHandler
from jsflow.flow.sink import StreamSink
from jsflow.flow.state import MessageStatus, StateRecorder
from tests.support.names import uniq
from tests.support.polling import eventually
from tests.support.streams import count_is, flow_source, publish_json, settled, stream_msgs


async def test_map_filter_and_fan_out_reach_the_sink(jsflow_client):
    # given a flow doubling, keeping evens and repeating each value twice
    name = uniq("mff")
    source = flow_source(name)
    sink = StreamSink(f"out.{name}", stream=f"OUT_{name}")
    flow = FlowHandler(
        jsflow_client,
        source=source,
        stages=[map_(lambda x: x * 3), filter_(lambda x: x % 2 == 0), flat_map(lambda x: [x, x])],
        sink=sink,
    )
    async with flow:
        # when five numbers arrive
        await publish_json(jsflow_client, f"in.{name}", [1, 2, 3, 4, 5])
        await eventually(lambda: count_is(jsflow_client, f"OUT_{name}", 4))
        await eventually(lambda: settled(jsflow_client, f"IN_{name}", f"d_{name}"))
    # then the sink holds 6, 6, 12, 12 with dedupe ids derived from the source
    msgs = await stream_msgs(jsflow_client, f"OUT_{name}")
    assert [json.loads(m.data) for m in msgs] == [6, 6, 12, 12]
    assert {m.headers["Nats-Msg-Id"] for m in msgs} == {
        f"IN_{name}:2:d_{name}:0",
        f"IN_{name}:2:d_{name}:1",
        f"IN_{name}:4:d_{name}:0",
        f"IN_{name}:4:d_{name}:1",
    }
    assert flow.metrics.snapshot().processed == 5


async def test_plain_async_function_and_message_handler_are_stages(jsflow_client):
    # given one function stage and one MessageHandler object
    name = uniq("shape")

    async def add_one(msg: jsflow.flow.message.Message[int]) -> int:
        return msg.data + 1

    class Square:
        async def handle(self, msg):
            return msg.data * msg.data

    flow = FlowHandler(
        jsflow_client,
        source=flow_source(name),
        stages=[add_one, Square()],
        sink=StreamSink(f"out.{name}", stream=f"OUT_{name}"),
    )
    async with flow:
        await publish_json(jsflow_client, f"in.{name}", [2])
        await eventually(lambda: count_is(jsflow_client, f"OUT_{name}", 1))
    # then (2 + 1) ** 2
    assert json.loads((await stream_msgs(jsflow_client, f"OUT_{name}"))[0].data) == 9


async def test_sink_failure_keeps_source_unacked_then_dead_letters(jsflow_client):
    # given a sink subject no stream captures (for longer than the flow's outage window),
    # and a dead-letter stream
    name = uniq("nosink")
    flow = FlowHandler(
        jsflow_client,
        source=flow_source(name),
        stages=[map_(lambda x: x)],
        sink=StreamSink(f"nowhere.{name}"),
        max_deliver=2,
        backoff=[0.05],
        dead_letter=f"dl.{name}",
        dead_letter_stream=f"DL_{name}",
        outage_window=0.3,
    )
    async with flow:
        # when a message flows
        await publish_json(jsflow_client, f"in.{name}", [7])
        await eventually(lambda: count_is(jsflow_client, f"DL_{name}", 1))
        await eventually(lambda: settled(jsflow_client, f"IN_{name}", f"d_{name}"))
    # then it was never acked as done: it is failed twice and dead-lettered, not lost
    snap = flow.metrics.snapshot()
    assert (snap.processed, snap.failed, snap.dead_lettered) == (0, 2, 1)
    dead = (await stream_msgs(jsflow_client, f"DL_{name}"))[0]
    assert dead.data == b"7"
    assert dead.headers["Jsflow-Stage"].startswith("sink:")
    assert dead.headers["Jsflow-Error-Type"] == "NoStreamError"
    assert dead.headers["Jsflow-Delivery"] == "2"


async def test_redelivery_does_not_duplicate_output(jsflow_client):
    # given a sink that fails the second output of the first delivery only
    name = uniq("dup")
    real = StreamSink(f"out.{name}", stream=f"OUT_{name}")
    failed = []

    class Flaky:
        async def open(self, client):
            await real.open(client)

        async def publish(self, msg, msg_id):
            if msg_id.endswith(":1") and not failed:
                failed.append(msg_id)
                raise jsflow.ServerError("injected")
            await real.publish(msg, msg_id)

    flow = FlowHandler(
        jsflow_client,
        source=flow_source(name),
        stages=[flat_map(lambda x: [x, x + 1])],
        sink=Flaky(),
        backoff=[0.05],
    )
    async with flow:
        # when one message fans out to two outputs and is redelivered after a partial publish
        await publish_json(jsflow_client, f"in.{name}", [10])
        await eventually(lambda: settled(jsflow_client, f"IN_{name}", f"d_{name}"))
    # then the output stream holds each output once
    msgs = await stream_msgs(jsflow_client, f"OUT_{name}")
    assert failed and sorted(json.loads(m.data) for m in msgs) == [10, 11]
    assert flow.metrics.snapshot().redelivered == 1


async def test_backoff_then_max_deliver_dead_letters_with_headers(jsflow_client):
    # given a stage that always fails, max_deliver=3 and small backoff
    name = uniq("dead")
    deliveries = []

    async def broken(msg):
        deliveries.append(msg.delivery)
        raise ValueError("boom")

    flow = FlowHandler(
        jsflow_client,
        source=flow_source(name),
        stages=[broken],
        max_deliver=3,
        backoff=[0.05, 0.1],
        dead_letter=f"dl.{name}",
        dead_letter_stream=f"DL_{name}",
    )
    async with flow:
        # when a message with its own headers arrives
        await jsflow_client.js.publish(
            f"in.{name}", b"5", headers={"Jsflow-Correlation-Id": "corr-1", "x-app": "a"}
        )
        await eventually(lambda: count_is(jsflow_client, f"DL_{name}", 1))
        await eventually(lambda: settled(jsflow_client, f"IN_{name}", f"d_{name}"))
    # then it was tried three times, then dead-lettered with the error and original headers
    assert deliveries == [1, 2, 3]
    dead = (await stream_msgs(jsflow_client, f"DL_{name}"))[0]
    assert dead.data == b"5"
    assert dead.headers["Jsflow-Error-Type"] == "ValueError"
    assert dead.headers["Jsflow-Error-Message"] == "boom"
    assert dead.headers["Jsflow-Stage"] == "broken"
    assert dead.headers["Jsflow-Delivery"] == "3"
    assert dead.headers["Jsflow-Failed-At"].endswith("Z")
    assert dead.headers["x-app"] == "a"
    assert dead.headers["Jsflow-Correlation-Id"] == "corr-1"


async def test_undecodable_message_is_dead_lettered_at_once(jsflow_client):
    # given a flow of ints
    name = uniq("undec")
    calls = []

    async def seen(msg):
        calls.append(msg.data)
        return msg.data

    flow = FlowHandler(
        jsflow_client,
        source=flow_source(name),
        stages=[seen],
        max_deliver=5,
        dead_letter=f"dl.{name}",
        dead_letter_stream=f"DL_{name}",
    )
    async with flow:
        # when garbage arrives, then a good message
        await jsflow_client.js.publish(f"in.{name}", b"{not json")
        await publish_json(jsflow_client, f"in.{name}", [1])
        await eventually(lambda: count_is(jsflow_client, f"DL_{name}", 1))
        await eventually(lambda: settled(jsflow_client, f"IN_{name}", f"d_{name}"))
    # then the garbage went to the dead letter on its first delivery; the good one flowed
    dead = (await stream_msgs(jsflow_client, f"DL_{name}"))[0]
    assert dead.headers["Jsflow-Stage"] == "decode"
    assert dead.headers["Jsflow-Delivery"] == "1"
    assert dead.headers["Jsflow-Error-Type"] == "CodecError"
    assert calls == [1]


async def test_dead_letter_publish_failure_naks_instead_of_dropping(jsflow_client):
    # given a dead-letter stream that goes away after the flow started (a subject no stream
    # captures at start is refused with ConfigError: see test_flow_lifecycle.py)
    name = uniq("dlfail")

    async def broken(msg):
        raise RuntimeError("always")

    flow = FlowHandler(
        jsflow_client,
        source=flow_source(name),
        stages=[broken],
        max_deliver=1,
        backoff=[0.05],
        dead_letter=f"nowhere.{name}",
        dead_letter_stream=f"GONE_{name}",
        outage_window=0.3,
    )
    async with flow:
        await jsflow_client.js.delete_stream(f"GONE_{name}")
        await publish_json(jsflow_client, f"in.{name}", [1])
        await eventually(lambda: _delivered_at_least(jsflow_client, name, 3))
    # then the message was never terminated: it keeps coming back, still in the stream
    assert flow.metrics.snapshot().dead_lettered == 0
    assert len(await stream_msgs(jsflow_client, f"IN_{name}")) == 1


async def _delivered_at_least(client, name, n):
    info = await client.js.consumer_info(f"IN_{name}", f"d_{name}")
    return (
        info.delivered.stream_seq >= 1
        and info.num_redelivered >= 1
        and (info.delivered.consumer_seq >= n)
    )


async def test_in_progress_extends_ack_deadline_of_slow_stage(jsflow_client):
    # given ack_wait of 1 s and a stage that takes 2.5 s
    name = uniq("slow")
    deliveries = []

    async def slow(msg):
        deliveries.append(msg.delivery)
        await asyncio.sleep(2.5)
        return msg.data

    flow = FlowHandler(
        jsflow_client,
        source=flow_source(name, ack_wait=1.0),
        stages=[slow],
        sink=StreamSink(f"out.{name}", stream=f"OUT_{name}"),
    )
    async with flow:
        # when it runs
        await publish_json(jsflow_client, f"in.{name}", [1])
        await eventually(lambda: count_is(jsflow_client, f"OUT_{name}", 1))
        await eventually(lambda: settled(jsflow_client, f"IN_{name}", f"d_{name}"))
    # then it was delivered once: the deadline kept moving while the stage ran
    assert deliveries == [1]


async def test_state_store_records_message_lifecycle(jsflow_client, jsflow_bucket):
    # given a flow recording state
    name = uniq("state")
    store = await jsflow_client.object_store(jsflow_bucket, jsflow.flow.state.MessageState)

    async def fails_first(msg):
        if msg.delivery == 1:
            raise KeyError("first")
        return msg.data

    flow = FlowHandler(
        jsflow_client,
        source=flow_source(name),
        stages=[fails_first],
        backoff=[0.05],
        state_store=store,
    )
    async with flow:
        await jsflow_client.js.publish(f"in.{name}", b"1", headers={"Nats-Msg-Id": "order-1"})
        await eventually(lambda: settled(jsflow_client, f"IN_{name}", f"d_{name}"))
    # then the message's record says DONE after two attempts
    state = await StateRecorder(store).get("order-1")
    assert state is not None
    assert (state.status, state.attempts, state.stage) == (MessageStatus.DONE, 2, "fails_first")


async def test_two_flows_on_one_stream_into_one_sink_stream_both_publish(jsflow_client):
    # given two flows (different durables) reading one stream into one sink stream
    name = uniq("twoflows")
    sink_stream = f"OUT_{name}"
    flows = [
        FlowHandler(
            jsflow_client,
            source=flow_source(name, durable=f"{tag}_{name}"),
            stages=[lambda msg, tag=tag: _tagged(msg, tag)],
            sink=StreamSink(f"out.{name}.{tag}", stream=sink_stream if tag == "a" else None),
        )
        for tag in ("a", "b")
    ]
    async with flows[0]:
        await jsflow_client.js.update_stream(
            name=sink_stream, subjects=[f"out.{name}.a", f"out.{name}.b"]
        )
        async with flows[1]:
            # when one message arrives
            await publish_json(jsflow_client, f"in.{name}", [5])
            await eventually(lambda: count_is(jsflow_client, sink_stream, 2))
    # then each flow's output was stored: neither deduped the other's away
    msgs = await stream_msgs(jsflow_client, sink_stream)
    assert sorted(m.data for m in msgs) == [b"a5", b"b5"]


async def _tagged(msg, tag):
    return f"{tag}{msg.data}"
