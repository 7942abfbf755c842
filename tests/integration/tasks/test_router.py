"""EventRouter: domain events expand into task requests, idempotently, on a real server; a
failing expansion is dead-lettered (cut to fit), and no event, header or misconfiguration
stops the router."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from nats.aio.msg import Msg
from nats.js import api
from nats.js.errors import NotFoundError

import jsflow
from jsflow._js.guard import headers_size
from jsflow.flow import headers as h
from jsflow.tasks.app import App
from jsflow.tasks.router import EventRouter
from jsflow.tasks.streams import task_token
from tests.support.names import uniq
from tests.support.polling import eventually, running_jsflow_tasks
from tests.support.streams import request_counts, stream_exists


async def _requests(client: jsflow.Client, token: str) -> int:
    """How many requests for task token ``token`` the task stream holds."""
    return sum((await request_counts(client, token)).values())


class _FailingRouter(EventRouter):
    """A router whose expansion always fails transiently (counting the attempts)."""

    attempts = 0

    async def expand(self, msg: Msg) -> list[str]:
        self.attempts += 1
        raise RuntimeError("downstream unavailable")


@contextlib.asynccontextmanager
async def _running(router: EventRouter) -> AsyncIterator[asyncio.Future[None]]:
    runner = asyncio.ensure_future(router.run())
    try:
        yield runner
    finally:
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError, jsflow.JsflowError):
            await runner


async def _run_until(router: EventRouter, done: Callable[[], Awaitable[bool]]) -> None:
    async with _running(router):
        await eventually(done, "the router to reach the condition", timeout=20)


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


async def test_router_rejects_unbounded_or_bad_redelivery_options(
    jsflow_client: jsflow.Client,
) -> None:
    # when the options would not bound redelivery, then ConfigError before any I/O
    for bad in ({"max_deliver": 0}, {"max_deliver": -1}, {"backoff": [-1.0]}):
        with pytest.raises(jsflow.ConfigError):
            EventRouter(jsflow_client, **bad)  # type: ignore[arg-type]
    with pytest.raises(jsflow.JsflowError):
        EventRouter(jsflow_client, dead_letter="dead.>")


async def test_router_rules_load_from_toml(tmp_path: Path, jsflow_client: jsflow.Client) -> None:
    # given a TOML rules file
    rules = tmp_path / "rules.toml"
    rules.write_text(
        'stream = "JSFLOW_EVENTS_TOML"\n'
        "[[rule]]\n"
        'on = "device.updated"\n'
        'request = ["recalculate_fields", "sync_external_systems"]\n'
        "[[rule]]\n"
        'on = "device.*.deleted"\n'
        'request = "cleanup"\n'
    )
    # when it is loaded, then the rules and stream are as written
    router = EventRouter.from_toml(jsflow_client, rules)
    assert router.stream == "JSFLOW_EVENTS_TOML"
    assert [(r.pattern, r.tasks) for r in router.rules] == [
        ("device.updated", ("recalculate_fields", "sync_external_systems")),
        ("device.*.deleted", ("cleanup",)),
    ]
    assert router.rules[1].matches("device.9.deleted")
    assert not router.rules[1].matches("device.deleted")
    # and a broken file raises ConfigError before any I/O
    bad = tmp_path / "bad.toml"
    bad.write_text("[[rule]]\non = 3\n")
    with pytest.raises(jsflow.ConfigError):
        EventRouter.from_toml(jsflow_client, bad)


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


# -- expansion -----------------------------------------------------------------------------


async def test_router_expands_one_event_into_its_tasks(jsflow_client: jsflow.Client) -> None:
    # given a router rule device.updated -> two tasks, and workers for both
    prefix = uniq("dev")
    recalc, sync = uniq("recalc"), uniq("sync")
    app = App(jsflow_client, "t")
    got: dict[str, object] = {}

    @app.task(name=recalc)
    async def recalculate(event: dict[str, object]) -> None:
        got["recalc"] = event

    @app.task(name=sync)
    async def sync_external(event: dict[str, object]) -> None:
        got["sync"] = event

    router = EventRouter(jsflow_client, stream=uniq("EV"), durable=uniq("router"), app=app)
    router.on(f"{prefix}.updated").request(recalc, sync)
    runner = asyncio.ensure_future(router.run())
    try:
        async with app.worker():
            # the router creates its stream on start
            await eventually(lambda: stream_exists(jsflow_client, router.stream), "its stream")
            # when one domain event is published
            await jsflow_client.js.publish(f"{prefix}.updated", b'{"device": 7}')
            for _ in range(200):
                if len(got) == 2:
                    break
                await asyncio.sleep(0.05)
    finally:
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner
    # then each task ran once with the event's decoded data as its argument
    assert got == {"recalc": {"device": 7}, "sync": {"device": 7}}


async def test_router_expansion_is_idempotent_under_redelivery(
    jsflow_client: jsflow.Client,
) -> None:
    # given a domain event delivered to the router twice (nak'd after the first expansion)
    prefix, name_a, name_b = uniq("ord"), uniq("a"), uniq("b")
    stream = uniq("EVR")
    js = jsflow_client.js
    await js.add_stream(api.StreamConfig(name=stream, subjects=[f"{prefix}.>"]))
    app = App(jsflow_client, "t")
    router = EventRouter(jsflow_client, stream=stream, app=app)
    router.on(f"{prefix}.created").request(name_a, name_b, map=lambda e: e["id"])
    await js.publish(f"{prefix}.created", b'{"id": 42}')
    sub = await js.pull_subscribe(f"{prefix}.>", durable=uniq("d"), stream=stream)
    (first,) = await sub.fetch(1, timeout=5)
    ids_first = await router.expand(first)
    await first.nak()
    (again,) = await sub.fetch(1, timeout=5)
    assert again.metadata.num_delivered == 2
    # when it is expanded again
    ids_again = await router.expand(again)
    # then the same task ids come out and no request was published twice
    assert ids_first == ids_again and len(set(ids_first)) == 2
    assert await _requests(jsflow_client, task_token(app.scope, name_a)) == 1
    assert await _requests(jsflow_client, task_token(app.scope, name_b)) == 1
    # and the mapped argument reaches the task

    @app.task(name=name_a)
    async def task_a(order_id: int) -> int:
        return order_id + 1

    async with app.worker():
        assert await task_a.handle(ids_first[0]).result(timeout=10) == 43


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
        await eventually(lambda: router.stats.requested == 2, "two requests")
    assert await _requests(jsflow_client, task) == 2


# -- dead letters --------------------------------------------------------------------------


async def test_router_dead_letters_an_event_after_max_deliver_attempts(
    jsflow_client: jsflow.Client,
) -> None:
    # given a router whose expansion keeps failing, with a dead letter captured by a stream
    prefix, stream, dead = uniq("dl"), uniq("EVD"), uniq("dead")
    js = jsflow_client.js
    await js.add_stream(api.StreamConfig(name=stream, subjects=[f"{prefix}.>"]))
    await js.add_stream(api.StreamConfig(name=uniq("DLQ"), subjects=[dead]))
    router = _FailingRouter(
        jsflow_client,
        stream=stream,
        durable=uniq("r"),
        max_deliver=3,
        backoff=[0.0],
        dead_letter=dead,
    )
    router.on(f"{prefix}.updated").request(uniq("t"))
    # when one event is published
    await js.publish(
        f"{prefix}.updated", b'{"device": 1}', headers={"Nats-Msg-Id": "ev-1", "X-Trace": "abc"}
    )
    dlq = await js.subscribe(dead)

    async def dead_lettered() -> bool:
        return router.stats.dead_lettered == 1

    await _run_until(router, dead_lettered)
    # then it was tried exactly max_deliver times, then published to the dead letter with its
    # original body and headers plus the error headers, and terminated
    assert router.attempts == 3
    msg = await dlq.next_msg(timeout=5)
    assert msg.data == b'{"device": 1}'
    headers = msg.headers or {}
    assert headers[h.ERROR_TYPE] == "RuntimeError"
    assert headers[h.ERROR_MESSAGE] == "downstream unavailable"
    assert headers[h.DELIVERY] == "3"
    assert headers[h.FAILED_AT]
    assert headers["X-Trace"] == "abc"
    assert headers[h.ORIGINAL_MSG_ID] == "ev-1"
    assert headers[h.ORIGINAL_SUBJECT] == f"{prefix}.updated"
    info = await js.consumer_info(stream, router.durable)
    assert info.num_pending == 0 and info.num_ack_pending == 0
    # and the server-side consumer is bounded too
    assert info.config.max_deliver is not None and 3 <= info.config.max_deliver < 100


async def test_router_without_dead_letter_terminates_after_max_deliver(
    jsflow_client: jsflow.Client,
) -> None:
    # given a failing router with no dead letter
    prefix, stream = uniq("nodl"), uniq("EVN")
    js = jsflow_client.js
    await js.add_stream(api.StreamConfig(name=stream, subjects=[f"{prefix}.>"]))
    router = _FailingRouter(
        jsflow_client, stream=stream, durable=uniq("r"), max_deliver=2, backoff=[0.0]
    )
    router.on(f"{prefix}.updated").request(uniq("t"))
    # when an event is published
    await js.publish(f"{prefix}.updated", b"{}")

    async def settled() -> bool:
        try:
            info = await js.consumer_info(stream, router.durable)
        except NotFoundError:  # the router creates it on start
            return False
        return router.stats.dead_lettered == 1 and info.num_ack_pending == 0

    await _run_until(router, settled)
    # then it was tried max_deliver times and then dropped (terminated), not redelivered
    assert router.attempts == 2
    info = await js.consumer_info(stream, router.durable)
    assert info.num_pending == 0 and info.num_redelivered == 0


async def test_router_dead_letters_an_event_its_map_cannot_handle_at_once(
    jsflow_client: jsflow.Client,
) -> None:
    # given a rule whose map fails on some events, and a dead letter
    prefix, stream, dead = uniq("map"), uniq("EVM"), uniq("deadm")
    js = jsflow_client.js
    await js.add_stream(api.StreamConfig(name=stream, subjects=[f"{prefix}.>"]))
    await js.add_stream(api.StreamConfig(name=uniq("DLQM"), subjects=[dead]))
    router = EventRouter(
        jsflow_client, stream=stream, durable=uniq("r"), max_deliver=5, dead_letter=dead
    )
    router.on(f"{prefix}.created").request(uniq("t"), map=lambda e: e["id"])
    dlq = await js.subscribe(dead)
    # when an event without the field is published
    await js.publish(f"{prefix}.created", b'{"other": 1}')

    async def dead_lettered() -> bool:
        return router.stats.dead_lettered == 1

    await _run_until(router, dead_lettered)
    # then it goes to the dead letter on its first delivery, naming the map's failure
    msg = await dlq.next_msg(timeout=5)
    headers = msg.headers or {}
    assert headers[h.ERROR_TYPE] == "CodecError"
    assert "KeyError" in headers[h.ERROR_MESSAGE]
    assert headers[h.DELIVERY] == "1"


async def test_a_named_dead_letter_stream_is_created_for_the_dead_letter(jsflow_client):
    prefix, stream, dead, dls = uniq("mk"), uniq("EVK"), uniq("deadk"), uniq("DLK")
    router = _FailingRouter(
        jsflow_client,
        stream=stream,
        durable=uniq("r"),
        max_deliver=1,
        dead_letter=dead,
        dead_letter_stream=dls,
    )
    router.on(f"{prefix}.x").request(uniq("t"))
    async with asyncio.timeout(30), _running(router):
        await eventually(lambda: stream_exists(jsflow_client, dls), "the dead-letter stream")
        await jsflow_client.js.publish(f"{prefix}.x", b"{}")
        await eventually(lambda: router.stats.dead_lettered == 1, "a dead letter")
    info = await jsflow_client.js.stream_info(dls)
    assert info.state.messages == 1


async def test_a_dead_letter_of_an_event_near_max_payload_is_truncated_to_fit(jsflow_client):
    # given a failing router and an event that nearly fills max_payload
    prefix, stream, dead = uniq("big"), uniq("EVB"), uniq("deadb")
    js = jsflow_client.js
    limit = jsflow_client.nc.max_payload
    await js.add_stream(api.StreamConfig(name=stream, subjects=[f"{prefix}.>"]))
    await js.add_stream(api.StreamConfig(name=uniq("DLB"), subjects=[dead]))
    router = _FailingRouter(
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


# -- connection loss -----------------------------------------------------------------------


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

    await eventually(consuming, "the router consuming")
    # when the client closes
    await client.close()
    # then run() ends within seconds with ConnectionClosedError, leaving no jsflow task
    async with asyncio.timeout(15):
        with pytest.raises(jsflow.ConnectionClosedError):
            await runner
    await asyncio.sleep(0)
    assert running_jsflow_tasks() == set()
