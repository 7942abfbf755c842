"""A flow's life: it refuses to start on a dead letter no stream stores, stop() drains what
is in flight and returns only once the server has every ack, a cancelled run leaves its
message for redelivery, and a closed client ends the flow (and its fetch loop) at once,
leaving no task behind."""

from __future__ import annotations

import asyncio

import pytest

import jsflow
from jsflow.flow.consume import fetch_loop
from jsflow.flow.pipeline import FlowHandler
from jsflow.flow.sink import StreamSink
from tests.support.names import uniq
from tests.support.polling import eventually, running_jsflow_tasks
from tests.support.streams import count_is, flow_source, publish_json, settled

# -- starting ------------------------------------------------------------------------------


async def test_a_dead_letter_no_stream_captures_fails_the_start(jsflow_client):
    # given a dead letter subject that no stream stores and no stream to create for it
    name = uniq("nodl")
    flow = FlowHandler(jsflow_client, source=flow_source(name), dead_letter=f"nowhere.{name}")
    # when the flow starts, then it fails with ConfigError instead of retrying forever
    async with asyncio.timeout(10):
        with pytest.raises(jsflow.ConfigError, match="no stream captures"):
            await flow.run()


async def test_a_dead_letter_stream_that_exists_without_the_subject_fails_the_start(
    jsflow_client,
):
    name = uniq("dlother")
    await jsflow_client.js.add_stream(name=f"DL_{name}", subjects=[f"other.{name}"])
    flow = FlowHandler(
        jsflow_client,
        source=flow_source(name),
        dead_letter=f"dl.{name}",
        dead_letter_stream=f"DL_{name}",
    )
    async with asyncio.timeout(10):
        with pytest.raises(jsflow.ConfigError):
            await flow.run()


async def _same(msg):
    return msg.data


# -- stopping and connection loss ----------------------------------------------------------


async def test_a_flow_ends_with_connection_closed_when_its_client_closes(jsflow_server):
    # given a running flow on its own client
    client = await jsflow.connect(jsflow_server.url)
    name = uniq("closed")
    flow = FlowHandler(client, source=flow_source(name), stages=[_same])
    runner = asyncio.ensure_future(flow.run())
    await flow.ready(10)
    # when the client closes
    await client.close()
    # then run() ends within seconds with ConnectionClosedError, leaving no jsflow task
    async with asyncio.timeout(15):
        with pytest.raises(jsflow.ConnectionClosedError):
            await runner
    await asyncio.sleep(0)
    assert running_jsflow_tasks() == set()


async def test_the_fetch_loop_ends_at_once_on_a_closed_connection(jsflow_server):
    # given a closed client, then the shared fetch loop raises instead of retrying
    client = await jsflow.connect(jsflow_server.url)
    await client.close()

    class Never:
        async def fetch(self, n, timeout):
            raise AssertionError("fetched on a closed connection")

    async with asyncio.timeout(5):
        with pytest.raises(jsflow.ConnectionClosedError):
            await fetch_loop(Never(), list, client=client, stop=asyncio.Event(), batch=1)


async def test_stop_returns_only_after_the_server_has_every_ack(jsflow_client):
    # given messages in flight, some finished just before stop() and some during the drain
    name = uniq("acks")

    async def mixed(msg):
        if msg.data % 2:
            await asyncio.sleep(0.3)
        return msg.data

    flow = FlowHandler(
        jsflow_client, source=flow_source(name, batch=20), stages=[mixed], concurrency=20
    )
    async with asyncio.timeout(30):
        async with flow:
            await publish_json(jsflow_client, f"in.{name}", list(range(12)))
            await eventually(lambda: flow.metrics.snapshot().processed >= 6)
            # when the flow is stopped
            await flow.stop()
        # then nothing it finished is still awaiting its ack on the server
        info = await jsflow_client.js.consumer_info(f"IN_{name}", f"d_{name}")
    assert flow.metrics.snapshot().processed == 12
    assert info.num_ack_pending == 0


async def test_stop_drains_in_flight_messages(jsflow_client):
    # given a slow stage with messages in flight
    name = uniq("drain")
    started = asyncio.Event()

    async def slow(msg):
        started.set()
        await asyncio.sleep(0.3)
        return msg.data

    flow = FlowHandler(
        jsflow_client,
        source=flow_source(name),
        stages=[slow],
        sink=StreamSink(f"out.{name}", stream=f"OUT_{name}"),
        concurrency=4,
    )
    runner = asyncio.create_task(flow.run())
    await flow.ready(10)
    await publish_json(jsflow_client, f"in.{name}", [1, 2, 3])
    await asyncio.wait_for(started.wait(), 10)
    # when stop() is called mid-stage
    await flow.stop()
    await runner
    # then every message it had started finished and reached the sink
    finished = flow.metrics.snapshot().processed
    assert finished >= 1
    assert await count_is(jsflow_client, f"OUT_{name}", finished)
    # and a later run takes the rest: each message exactly once in the sink
    again = FlowHandler(jsflow_client, source=flow_source(name), stages=[slow], sink=flow.sink)
    async with again:
        await eventually(lambda: count_is(jsflow_client, f"OUT_{name}", 3))
        await eventually(lambda: settled(jsflow_client, f"IN_{name}", f"d_{name}"))
    assert finished + again.metrics.snapshot().processed == 3


async def test_cancellation_mid_stage_leaves_message_for_redelivery(jsflow_client):
    # given a stage that blocks on first delivery
    name = uniq("cancel")
    started = asyncio.Event()
    deliveries = []

    async def stage(msg):
        deliveries.append(msg.delivery)
        if msg.delivery == 1:
            started.set()
            await asyncio.sleep(60)
        return msg.data

    sink = StreamSink(f"out.{name}", stream=f"OUT_{name}")
    first = FlowHandler(jsflow_client, source=flow_source(name), stages=[stage], sink=sink)
    runner = asyncio.create_task(first.run())
    await first.ready(10)
    await publish_json(jsflow_client, f"in.{name}", [42])
    await asyncio.wait_for(started.wait(), 10)
    # when the run is cancelled mid-stage
    runner.cancel()
    await asyncio.gather(runner, return_exceptions=True)
    assert await count_is(jsflow_client, f"OUT_{name}", 0)
    # then a new run gets the message again and completes it
    second = FlowHandler(jsflow_client, source=flow_source(name), stages=[stage], sink=sink)
    async with second:
        await eventually(lambda: count_is(jsflow_client, f"OUT_{name}", 1))
    assert deliveries == [1, 2]
