"""FlowHandler hardening: no message, header or misconfiguration stops a flow."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import jsflow
from jsflow._js.guard import headers_size
from jsflow.flow import headers as h
from jsflow.flow.consume import FETCH_BACKOFF, fetch_loop
from jsflow.flow.middleware.dedupe import Dedupe, DedupeMark
from jsflow.flow.pipeline import FlowHandler
from jsflow.flow.sink import StreamSink
from jsflow.flow.source import StreamSource
from jsflow.flow.state import MessageState, StateRecorder
from jsflow.flow.streams import subject_matches
from tests.test_flow_helpers import count_is, eventually, publish_json, stream_msgs, unique

_JSFLOW_DIR = str(Path(jsflow.__file__).parent)


def _source(name: str, tp: type = int, **kw: object) -> StreamSource:
    kw.setdefault("fetch_timeout", 0.25)
    return StreamSource(f"IN_{name}", f"in.{name}", f"d_{name}", tp, **kw)


def _jsflow_tasks() -> list[asyncio.Task[object]]:
    """Unfinished tasks running jsflow code (other than the test's own)."""
    out = []
    for task in asyncio.all_tasks():
        if task is asyncio.current_task() or task.done():
            continue
        code = getattr(task.get_coro(), "cr_code", None)
        if code is not None and code.co_filename.startswith(_JSFLOW_DIR):
            out.append(task)
    return out


# -- subjects ------------------------------------------------------------------------------


def _model(pattern: list[str], subject: list[str]) -> bool:
    """NATS subject matching, by its definition (recursive, token by token)."""
    if not pattern:
        return not subject
    if pattern == [">"]:
        return len(subject) >= 1
    if not subject:
        return False
    return pattern[0] in ("*", subject[0]) and _model(pattern[1:], subject[1:])


_tokens = st.lists(st.sampled_from(["a", "b", "ab"]), min_size=1, max_size=5)


@given(
    pattern=st.tuples(
        st.lists(st.sampled_from(["a", "b", "*"]), min_size=0, max_size=5), st.booleans()
    ),
    subject=_tokens,
)
def test_subject_matching_agrees_with_the_definition(pattern, subject):
    tokens, tail = pattern
    pat = [*tokens, ">"] if tail else tokens
    if not pat:
        pat = ["*"]
    assert subject_matches(".".join(pat), ".".join(subject)) == _model(pat, subject)


# -- configuration -------------------------------------------------------------------------


@pytest.mark.parametrize("subject", ["orders.dead", "orders.x.dead"], ids=["one-token", "deeper"])
async def test_a_dead_letter_the_source_reads_is_refused(jsflow_client, subject):
    # given a source on orders.> and a dead letter inside it, then ConfigError before I/O
    source = StreamSource("ORDERS_LOOP", "orders.>", "d_loop", int)
    with pytest.raises(jsflow.ConfigError, match="dead_letter"):
        FlowHandler(jsflow_client, source=source, dead_letter=subject)


@pytest.mark.parametrize("bad", ["dl q", "dlq.*", "dlq.>", "", "a..b", 7])
async def test_an_illegal_dead_letter_subject_is_refused(jsflow_client, bad):
    with pytest.raises(jsflow.ConfigError):
        FlowHandler(jsflow_client, source=_source(unique("cfg")), dead_letter=bad)


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"batch": "5"}, "batch"),
        ({"batch": 0}, "batch"),
        ({"ack_wait": float("inf")}, "ack_wait"),
        ({"ack_wait": "30"}, "ack_wait"),
        ({"fetch_timeout": -1}, "fetch_timeout"),
        ({"max_ack_pending": 1.5}, "max_ack_pending"),
    ],
)
def test_bad_source_options_raise_config_error_naming_them(kwargs, param):
    with pytest.raises(jsflow.ConfigError, match=param):
        StreamSource("S", "s.x", "d", int, **kwargs)


@pytest.mark.parametrize(
    ("stream", "durable"), [("a.b", "d"), ("S", "d x"), ("S" * 200, "d"), ("S", "")]
)
def test_illegal_stream_and_durable_names_are_refused(stream, durable):
    with pytest.raises(jsflow.ConfigError):
        StreamSource(stream, "s.x", durable, int)


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"concurrency": "4"}, "concurrency"),
        ({"concurrency": 0}, "concurrency"),
        ({"max_deliver": "3"}, "max_deliver"),
        ({"max_deliver": True}, "max_deliver"),
        ({"backoff": [float("nan")]}, "backoff"),
        ({"backoff": [-1.0]}, "backoff"),
        ({"backoff": "1,2"}, "backoff"),
    ],
)
async def test_bad_flow_options_raise_config_error_naming_them(jsflow_client, kwargs, param):
    with pytest.raises(jsflow.ConfigError, match=param):
        FlowHandler(jsflow_client, source=_source(unique("cfg")), **kwargs)


async def test_a_dead_letter_no_stream_captures_fails_the_start(jsflow_client):
    # given a dead letter subject that no stream stores and no stream to create for it
    name = unique("nodl")
    flow = FlowHandler(jsflow_client, source=_source(name), dead_letter=f"nowhere.{name}")
    # when the flow starts, then it fails with ConfigError instead of retrying forever
    async with asyncio.timeout(10):
        with pytest.raises(jsflow.ConfigError, match="no stream captures"):
            await flow.run()


async def test_a_dead_letter_stream_that_exists_without_the_subject_fails_the_start(
    jsflow_client,
):
    name = unique("dlother")
    await jsflow_client.js.add_stream(name=f"DL_{name}", subjects=[f"other.{name}"])
    flow = FlowHandler(
        jsflow_client,
        source=_source(name),
        dead_letter=f"dl.{name}",
        dead_letter_stream=f"DL_{name}",
    )
    async with asyncio.timeout(10):
        with pytest.raises(jsflow.ConfigError):
            await flow.run()


# -- payload limits ------------------------------------------------------------------------


async def test_an_output_over_max_payload_is_dead_lettered_at_once_and_the_flow_goes_on(
    jsflow_client,
):
    # given a pass-through flow into a sink, and a source message that fills max_payload
    # (the sink adds headers, so its output cannot fit)
    name = unique("big")
    limit = jsflow_client.nc.max_payload
    flow = FlowHandler(
        jsflow_client,
        source=_source(name, bytes),
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


async def _same(msg):
    return msg.data


async def test_a_dead_letter_of_a_message_near_max_payload_is_truncated_to_fit(jsflow_client):
    # given a failing stage and a source message with headers that nearly fills max_payload
    name = unique("trunc")
    limit = jsflow_client.nc.max_payload

    async def broken(msg):
        raise RuntimeError("boom\r\n" * 1000)  # a long, multi-line error message

    flow = FlowHandler(
        jsflow_client,
        source=_source(name, bytes),
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


# -- remote ids ----------------------------------------------------------------------------


async def test_a_hostile_message_id_does_not_stop_a_flow_with_state_and_dedupe(jsflow_client):
    # given a flow recording state and deduping on the message id
    name = unique("hostile")
    states = await jsflow_client.object_store(f"st_{name}", MessageState)
    marks = await jsflow_client.object_store(f"dd_{name}", DedupeMark)
    seen: list[int] = []

    async def record(msg):
        seen.append(msg.data)
        return msg.data

    flow = FlowHandler(
        jsflow_client,
        source=_source(name),
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
            await eventually(lambda: _is(lambda: flow.metrics.snapshot().processed == 5))
    # then every message was processed once, the hostile one's state is recorded under a
    # bounded key, and the client is still connected
    assert sorted(seen) == [1, 2, 3, 4, 5]
    state = await StateRecorder(states).get(hostile)
    assert state is not None and state.status.value == "DONE"
    assert jsflow_client.nc.is_connected


async def _is(check) -> bool:
    return bool(check())


# -- connection loss and graceful stop -----------------------------------------------------


async def test_a_flow_ends_with_connection_closed_when_its_client_closes(jsflow_server):
    # given a running flow on its own client
    client = await jsflow.connect(jsflow_server.url)
    name = unique("closed")
    flow = FlowHandler(client, source=_source(name), stages=[_same])
    runner = asyncio.ensure_future(flow.run())
    await flow.ready(10)
    # when the client closes
    await client.close()
    # then run() ends within seconds with ConnectionClosedError, leaving no jsflow task
    async with asyncio.timeout(15):
        with pytest.raises(jsflow.ConnectionClosedError):
            await runner
    await asyncio.sleep(0)
    assert _jsflow_tasks() == []


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


def test_fetch_backoff_is_capped_jittered_and_never_zero():
    delays = [FETCH_BACKOFF.delay(n) for n in range(1, 51)]
    assert all(0.05 <= d <= 5.0 for d in delays)
    assert max(delays[-10:]) <= 5.0 and min(delays[-10:]) >= 2.5


async def test_stop_returns_only_after_the_server_has_every_ack(jsflow_client):
    # given messages in flight, some finished just before stop() and some during the drain
    name = unique("acks")

    async def mixed(msg):
        if msg.data % 2:
            await asyncio.sleep(0.3)
        return msg.data

    flow = FlowHandler(
        jsflow_client, source=_source(name, batch=20), stages=[mixed], concurrency=20
    )
    async with asyncio.timeout(30):
        async with flow:
            await publish_json(jsflow_client, f"in.{name}", list(range(12)))
            await eventually(lambda: _is(lambda: flow.metrics.snapshot().processed >= 6))
            # when the flow is stopped
            await flow.stop()
        # then nothing it finished is still awaiting its ack on the server
        info = await jsflow_client.js.consumer_info(f"IN_{name}", f"d_{name}")
    assert flow.metrics.snapshot().processed == 12
    assert info.num_ack_pending == 0
