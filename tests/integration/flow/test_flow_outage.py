"""An outage of the backbone spends none of a message's deliveries: a sink publish that finds
no stream answering (its leader lost in a failover) is retried in place, the message kept in
progress, until the stream answers again, within the flow's ``outage_window`` (past it, the
failure is the message's: tests/integration/flow/test_flow.py, the sink-failure test)."""

from __future__ import annotations

import asyncio

from jsflow.flow.pipeline import FlowHandler
from jsflow.flow.sink import StreamSink
from jsflow.flow.streams import ensure_stream
from tests.support.names import uniq
from tests.support.polling import eventually
from tests.support.streams import count_is, flow_source, stream_msgs


async def _same(msg):
    return msg.data


async def test_a_sink_without_a_stream_for_a_while_loses_no_message(jsflow_client):
    # given a flow allowed a single delivery, whose sink stream does not answer yet
    name = uniq("outage")
    flow = FlowHandler(
        jsflow_client,
        source=flow_source(name, bytes),
        stages=[_same],
        sink=StreamSink(f"out.{name}"),
        max_deliver=1,
        backoff=[0.05],
    )
    async with asyncio.timeout(30):
        async with flow:
            await jsflow_client.js.publish(f"in.{name}", b"kept")
            await eventually(lambda: flow.metrics.in_flight == 1, "the message in flight")
            await asyncio.sleep(1.0)  # several publishes find no stream meanwhile
            # when the stream answers again
            await ensure_stream(jsflow_client, f"OUT_{name}", [f"out.{name}"])
            # then the output is written once and the source message acked, not terminated
            await eventually(lambda: count_is(jsflow_client, f"OUT_{name}", 1))
            await eventually(lambda: flow.metrics.processed == 1, "the ack")
    (out,) = await stream_msgs(jsflow_client, f"OUT_{name}")
    assert out.data == b"kept"
    assert flow.metrics.dead_lettered == 0
    assert flow.metrics.redelivered == 0
