"""EventRouter: domain events expand into task requests, idempotently, on a real server."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from pathlib import Path

import pytest
from nats.js import api

import jsflow
from jsflow.tasks.app import App
from jsflow.tasks.router import EventRouter
from jsflow.tasks.streams import TASK_STREAM, request_subject

pytestmark = pytest.mark.asyncio(loop_scope="session")


def uniq(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


async def _requests(client: jsflow.Client, name: str) -> int:
    info = await client.js.stream_info(TASK_STREAM, subjects_filter=request_subject(name) + ".>")
    return sum((info.state.subjects or {}).values())


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

    router = EventRouter(jsflow_client, stream=uniq("EV"), durable=uniq("router"))
    router.on(f"{prefix}.updated").request(recalc, sync)
    runner = asyncio.ensure_future(router.run())
    try:
        async with app.worker():
            for _ in range(50):  # the router creates its stream on start
                with contextlib.suppress(Exception):
                    await jsflow_client.js.stream_info(router.stream)
                    break
                await asyncio.sleep(0.05)
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
    router = EventRouter(jsflow_client, stream=stream)
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
    assert await _requests(jsflow_client, name_a) == 1
    assert await _requests(jsflow_client, name_b) == 1
    # and the mapped argument reaches the task
    app = App(jsflow_client, "t")

    @app.task(name=name_a)
    async def task_a(order_id: int) -> int:
        return order_id + 1

    async with app.worker():
        assert await task_a.handle(ids_first[0]).result(timeout=10) == 43


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
