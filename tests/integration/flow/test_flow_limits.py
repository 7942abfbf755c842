"""What does not fit stops no flow: an output over max_payload is dead-lettered at once, a
dead letter near max_payload is cut to fit saying so, and a hostile message id is recorded
under a bounded key."""

from __future__ import annotations

import asyncio
import json

from jsflow._js.guard import headers_size
from jsflow.flow import headers as h
from jsflow.flow.middleware.dedupe import Dedupe, DedupeMark
from jsflow.flow.pipeline import FlowHandler
from jsflow.flow.sink import StreamSink
from jsflow.flow.state import MessageState, StateRecorder
from tests.support.names import uniq
from tests.support.polling import eventually
from tests.support.streams import count_is, flow_source, publish_json, stream_msgs


async def test_an_output_over_max_payload_is_dead_lettered_at_once_and_the_flow_goes_on(
    jsflow_client,
):
    # given a pass-through flow into a sink, and a source message that fills max_payload
    # (the sink adds headers, so its output cannot fit)
    name = uniq("big")
    limit = jsflow_client.nc.max_payload
    flow = FlowHandler(
        jsflow_client,
        source=flow_source(name, bytes),
        stages=[_same],
        sink=StreamSink(f"out.{name}", stream=f"OUT_{name}"),
        max_deliver=5,
        backoff=[0.05],
        dead_letter=f"dl.{name}",
        dead_letter_stream=f"DL_{name}",
    )
    async with asyncio.timeout(30):
        async with flow:
            await jsflow_client.js.publish(
                f"in.{name}", b"x" * (limit - 300), headers={"X-Trace": "t" * 200}
            )
            await jsflow_client.js.publish(f"in.{name}", b"small")
            await eventually(lambda: count_is(jsflow_client, f"DL_{name}", 1))
            await eventually(lambda: count_is(jsflow_client, f"OUT_{name}", 1))
    # then the oversize one was dead-lettered on its first delivery, not retried
    (dead,) = await stream_msgs(jsflow_client, f"DL_{name}")
    assert dead.headers[h.ERROR_TYPE] == "PayloadTooLargeError"
    assert dead.headers[h.DELIVERY] == "1"
    assert dead.headers[h.ORIGINAL_STREAM] == f"IN_{name}"
    assert dead.headers[h.ORIGINAL_SEQUENCE] == "1"
    # and the next message went through, on a connection that is still up
    (out,) = await stream_msgs(jsflow_client, f"OUT_{name}")
    assert out.data == b"small"
    assert jsflow_client.nc.is_connected


async def test_a_dead_letter_of_a_message_near_max_payload_is_truncated_to_fit(jsflow_client):
    # given a failing stage and a source message with headers that nearly fills max_payload
    name = uniq("trunc")
    limit = jsflow_client.nc.max_payload

    async def broken(msg):
        raise RuntimeError("boom\r\n" * 1000)  # a long, multi-line error message

    flow = FlowHandler(
        jsflow_client,
        source=flow_source(name, bytes),
        stages=[broken],
        max_deliver=1,
        dead_letter=f"dl.{name}",
        dead_letter_stream=f"DL_{name}",
    )
    body = bytes(range(256)) * ((limit - 400) // 256)
    async with asyncio.timeout(30):
        async with flow:
            await jsflow_client.js.publish(f"in.{name}", body, headers={"X-Trace": "abc"})
            await eventually(lambda: count_is(jsflow_client, f"DL_{name}", 1))
    # then the dead letter was written, cut to fit, saying so and where the original is
    (dead,) = await stream_msgs(jsflow_client, f"DL_{name}")
    headers = dead.headers
    assert headers[h.TRUNCATED] == "true"
    assert headers[h.ORIGINAL_SIZE] == str(len(body))
    assert headers[h.ORIGINAL_STREAM] == f"IN_{name}"
    assert headers[h.ORIGINAL_SEQUENCE] == "1"
    assert headers["X-Trace"] == "abc"
    assert body.startswith(dead.data) and len(dead.data) < len(body)
    assert len(dead.data) + headers_size(headers) <= limit
    assert len(headers[h.ERROR_MESSAGE].encode()) <= 1024
    assert "\n" not in headers[h.ERROR_MESSAGE]
    assert flow.metrics.snapshot().dead_lettered == 1


async def test_a_hostile_message_id_does_not_stop_a_flow_with_state_and_dedupe(jsflow_client):
    # given a flow recording state and deduping on the message id
    name = uniq("hostile")
    states = await jsflow_client.object_store(f"st_{name}", MessageState)
    marks = await jsflow_client.object_store(f"dd_{name}", DedupeMark)
    seen: list[int] = []

    async def record(msg):
        seen.append(msg.data)
        return msg.data

    flow = FlowHandler(
        jsflow_client,
        source=flow_source(name),
        stages=[record],
        middleware=[Dedupe(marks)],
        state_store=states,
    )
    hostile = "x" * 1400
    async with asyncio.timeout(30):
        async with flow:
            # when one message among normal ones carries a 1,400-character Nats-Msg-Id
            await publish_json(jsflow_client, f"in.{name}", [1, 2])
            await jsflow_client.js.publish(
                f"in.{name}", json.dumps(3).encode(), headers={"Nats-Msg-Id": hostile}
            )
            await publish_json(jsflow_client, f"in.{name}", [4, 5])
            await eventually(lambda: flow.metrics.snapshot().processed == 5)
    # then every message was processed once, the hostile one's state is recorded under a
    # bounded key, and the client is still connected
    assert sorted(seen) == [1, 2, 3, 4, 5]
    state = await StateRecorder(states).get(hostile)
    assert state is not None and state.status.value == "DONE"
    assert jsflow_client.nc.is_connected


async def _same(msg):
    return msg.data
