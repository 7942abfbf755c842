"""EventRouter hardening: no event, header or misconfiguration stops the router."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from nats.js import api

import jsflow
from jsflow._js.guard import headers_size
from jsflow.flow import headers as h
from jsflow.tasks.router import EventRouter
from jsflow.tasks.streams import TASK_STREAM, request_subject

_JSFLOW_DIR = str(Path(jsflow.__file__).parent)


def uniq(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


async def _requests(client: jsflow.Client, name: str) -> int:
    info = await client.js.stream_info(TASK_STREAM, subjects_filter=request_subject(name) + ".>")
    return sum((info.state.subjects or {}).values())


async def _until(check: Callable[[], Awaitable[bool]], timeout: float = 15.0) -> None:
    async with asyncio.timeout(timeout):
        while not await check():
            await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def _running(router: EventRouter):
    runner = asyncio.ensure_future(router.run())
    try:
        yield runner
    finally:
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError, jsflow.JsflowError):
            await runner


class _Failing(EventRouter):
    async def expand(self, msg):
        raise RuntimeError("downstream unavailable")


# -- configuration -------------------------------------------------------------------------


def test_a_rule_that_reads_the_dead_letter_is_refused(jsflow_client):
    # given a dead letter orders.dead, then a rule on orders.> is a ConfigError
    router = EventRouter(jsflow_client, dead_letter="orders.dead")
    with pytest.raises(jsflow.ConfigError, match="dead_letter"):
        router.on("orders.>")
    with pytest.raises(jsflow.ConfigError, match="dead_letter"):
        router.on("orders.*")
    router.on("orders.created")  # a rule beside it is fine


@pytest.mark.parametrize("bad", ["dl q", "dlq.*", "dlq.>", "", 5])
def test_an_illegal_dead_letter_subject_is_refused(jsflow_client, bad):
    with pytest.raises(jsflow.ConfigError):
        EventRouter(jsflow_client, dead_letter=bad)


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"max_deliver": "3"}, "max_deliver"),
        ({"backoff": [float("nan")]}, "backoff"),
        ({"backoff": [float("inf")]}, "backoff"),
        ({"ack_wait": float("inf")}, "ack_wait"),
        ({"ack_wait": "30"}, "ack_wait"),
        ({"stream": "a.b"}, "stream"),
        ({"durable": "x" * 200}, "durable"),
    ],
)
def test_bad_router_options_raise_config_error_naming_them(jsflow_client, kwargs, param):
    with pytest.raises(jsflow.ConfigError, match=param):
        EventRouter(jsflow_client, **kwargs)


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('streem = "X"\n[[rule]]\non = "a.b"\nrequest = ["t"]\n', "streem"),
        ('[[rule]]\non = "a.b"\nrequests = ["t"]\n', "requests"),
    ],
)
def test_unknown_keys_in_toml_rules_are_refused(tmp_path, jsflow_client, text, key):
    rules = tmp_path / "rules.toml"
    rules.write_text(text)
    with pytest.raises(jsflow.ConfigError, match=key):
        EventRouter.from_toml(jsflow_client, rules)


async def test_a_dead_letter_no_stream_captures_fails_the_start(jsflow_client):
    prefix = uniq("nodl")
    router = EventRouter(
        jsflow_client, stream=uniq("EV"), durable=uniq("r"), dead_letter=f"nowhere.{prefix}"
    )
    router.on(f"{prefix}.x").request(uniq("t"))
    async with asyncio.timeout(10):
        with pytest.raises(jsflow.ConfigError, match="no stream captures"):
            await router.run()


async def test_a_named_dead_letter_stream_is_created_for_the_dead_letter(jsflow_client):
    prefix, stream, dead, dls = uniq("mk"), uniq("EVK"), uniq("deadk"), uniq("DLK")
    router = _Failing(
        jsflow_client,
        stream=stream,
        durable=uniq("r"),
        max_deliver=1,
        dead_letter=dead,
        dead_letter_stream=dls,
    )
    router.on(f"{prefix}.x").request(uniq("t"))
    async with asyncio.timeout(30), _running(router):
        await _until(lambda: _stream_exists(jsflow_client, dls))
        await jsflow_client.js.publish(f"{prefix}.x", b"{}")
        await _until(lambda: _is(router.stats.dead_lettered == 1))
    info = await jsflow_client.js.stream_info(dls)
    assert info.state.messages == 1


async def _stream_exists(client, name) -> bool:
    try:
        await client.js.stream_info(name)
    except Exception:
        return False
    return True


# -- events --------------------------------------------------------------------------------


async def test_an_event_reusing_a_msg_id_after_the_duplicate_window_gets_its_own_tasks(
    jsflow_client,
):
    # given an event stream with a short duplicate window
    prefix, stream, task = uniq("reuse"), uniq("EVR"), uniq("t")
    js = jsflow_client.js
    await js.add_stream(
        api.StreamConfig(name=stream, subjects=[f"{prefix}.>"], duplicate_window=0.5)
    )
    router = EventRouter(jsflow_client, stream=stream, durable=uniq("r"))
    router.on(f"{prefix}.created").request(task)
    async with asyncio.timeout(30), _running(router):
        # when two distinct events carry the same Nats-Msg-Id, the second after the window
        await js.publish(f"{prefix}.created", b"1", headers={"Nats-Msg-Id": "ev-1"})
        await asyncio.sleep(1.5)
        ack = await js.publish(f"{prefix}.created", b"2", headers={"Nats-Msg-Id": "ev-1"})
        assert ack.seq == 2 and not ack.duplicate
        # then each stored event requested its own task
        await _until(lambda: _is(router.stats.requested == 2))
    assert await _requests(jsflow_client, task) == 2


async def _is(value: bool) -> bool:
    return value


async def test_a_dead_letter_of_an_event_near_max_payload_is_truncated_to_fit(jsflow_client):
    # given a failing router and an event that nearly fills max_payload
    prefix, stream, dead = uniq("big"), uniq("EVB"), uniq("deadb")
    js = jsflow_client.js
    limit = jsflow_client.nc.max_payload
    await js.add_stream(api.StreamConfig(name=stream, subjects=[f"{prefix}.>"]))
    await js.add_stream(api.StreamConfig(name=uniq("DLB"), subjects=[dead]))
    router = _Failing(
        jsflow_client, stream=stream, durable=uniq("r"), max_deliver=1, dead_letter=dead
    )
    router.on(f"{prefix}.updated").request(uniq("t"))
    dlq = await js.subscribe(dead)
    body = b"e" * (limit - 100)
    async with asyncio.timeout(30), _running(router):
        await js.publish(f"{prefix}.updated", body, headers={"X-Trace": "abc"})
        msg = await dlq.next_msg(timeout=15)
    # then the dead letter was written, cut to fit, pointing at the original
    headers = msg.headers or {}
    assert headers[h.TRUNCATED] == "true"
    assert headers[h.ORIGINAL_SIZE] == str(len(body))
    assert headers[h.ORIGINAL_STREAM] == stream
    assert headers[h.ORIGINAL_SEQUENCE] == "1"
    assert len(msg.data) + headers_size(headers) <= limit
    assert headers["X-Trace"] == "abc"
    assert jsflow_client.nc.is_connected


async def test_the_router_ends_with_connection_closed_when_its_client_closes(jsflow_server):
    # given a router running on its own client
    client = await jsflow.connect(jsflow_server.url)
    prefix = uniq("closed")
    router = EventRouter(client, stream=uniq("EVC"), durable=uniq("r"))
    router.on(f"{prefix}.x").request(uniq("t"))
    runner = asyncio.ensure_future(router.run())

    async def consuming() -> bool:
        try:
            await client.js.consumer_info(router.stream, router.durable)
        except Exception:
            return False
        return True

    await _until(consuming)
    # when the client closes
    await client.close()
    # then run() ends within seconds with ConnectionClosedError, leaving no jsflow task
    async with asyncio.timeout(15):
        with pytest.raises(jsflow.ConnectionClosedError):
            await runner
    await asyncio.sleep(0)
    left = [
        t
        for t in asyncio.all_tasks()
        if t is not asyncio.current_task()
        and not t.done()
        and getattr(t.get_coro(), "cr_code", None) is not None
        and t.get_coro().cr_code.co_filename.startswith(_JSFLOW_DIR)
    ]
    assert left == []
