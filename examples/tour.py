"""A five-minute tour of jsflow: every layer once, on one embedded nats-server.

    .venv/bin/python examples/tour.py [--url nats://...]

1. typed state: twenty concurrent updates of one key, combined into a few writes;
2. a lock: two holders in turn, each with a larger fencing token;
3. a rate limiter shared by two clients: five starts a second between them;
4. a flow: orders priced and confirmed, a poison order dead-lettered with its error;
5. tasks: a report that depends on a fetch, which fails once, is retried, reports progress.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
import uuid
from dataclasses import dataclass, field

import jsflow
from jsflow import FlowHandler, Message, StreamSink, StreamSource


def say(feature: str, line: str) -> None:
    print(f"  [{feature:<11}] {line}")


# -- 1. typed state ---------------------------------------------------------------------


@dataclass
class Cart:
    items: list[str] = field(default_factory=list)
    total: float = 0.0


async def typed_state(client: jsflow.Client) -> None:
    carts = await client.object_store("tour_carts", Cart)
    await carts.put("ada", Cart())

    def add(item: str, price: float):  # type: ignore[no-untyped-def]
        def change(cart: Cart) -> None:
            cart.items.append(item)
            cart.total = round(cart.total + price, 2)

        return change

    start = (await carts.get("ada")).revision  # type: ignore[union-attr]
    await asyncio.gather(*(carts.update("ada", add(f"sku-{i}", 1.5)) for i in range(20)))
    entry = await carts.get("ada")
    assert entry is not None
    say(
        "store",
        f"20 concurrent updates of cart 'ada' -> {len(entry.value.items)} items, "
        f"total {entry.value.total:.2f}, in {entry.revision - start} write(s) (combined)",
    )


# -- 2. lock with fencing ---------------------------------------------------------------


async def lock_with_fencing(client: jsflow.Client) -> None:
    tokens = []
    for holder in ("billing-1", "billing-2"):
        async with client.lock("tour.invoice-42", ttl=5, owner=holder) as lock:
            tokens.append(lock.fencing_token)
            say("lock", f"{holder} holds 'tour.invoice-42' with fencing token {lock.fencing_token}")
    assert tokens[1] > tokens[0]
    say("lock", "a storage write that carries the token rejects the older holder's writes")


# -- 3. a rate limiter shared by two clients -----------------------------------------------


async def shared_limiter(url: str) -> None:
    name = f"tour-api-{uuid.uuid4().hex[:6]}"
    async with await jsflow.connect(url) as a, await jsflow.connect(url) as b:
        limiters = [c.rate_limiter(name, 5, per=1.0, burst=5) for c in (a, b)]
        decisions = await asyncio.gather(
            *(limiters[i % 2].try_acquire("partner-api") for i in range(8))
        )
    allowed = sum(d.allowed for d in decisions)
    say("limiter", f"two clients asked 8 times at once: {allowed} admitted, {8 - allowed} refused")


# -- 4. a flow with a dead letter -------------------------------------------------------


@dataclass
class Order:
    id: str = ""
    quantity: int = 0
    total: float = 0.0


async def flow_with_dead_letter(client: jsflow.Client) -> None:
    run = uuid.uuid4().hex[:6]

    async def price(msg: Message[Order]) -> Order:
        order = msg.data
        if order.quantity <= 0:
            raise ValueError(f"order {order.id}: quantity {order.quantity}")
        order.total = 2.5 * order.quantity
        return order

    flow = FlowHandler(
        client,
        source=StreamSource(f"TOUR_ORDERS_{run}", f"tour.{run}.orders", f"pricer_{run}", Order),
        stages=[price],
        sink=StreamSink(f"tour.{run}.priced", stream=f"TOUR_PRICED_{run}"),
        max_deliver=2,
        backoff=[0.2],
        dead_letter=f"tour.{run}.dead",
        dead_letter_stream=f"TOUR_DLQ_{run}",
    )
    async with flow:
        for order in (Order("o-1", 2), Order("o-2", -1), Order("o-3", 4)):
            await client.js.publish(f"tour.{run}.orders", jsflow.codec_for(Order).encode(order))
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            priced = (await client.js.stream_info(f"TOUR_PRICED_{run}")).state.messages
            dead = (await client.js.stream_info(f"TOUR_DLQ_{run}")).state.messages
            if priced == 2 and dead == 1:
                break
            await asyncio.sleep(0.1)
    letter = await client.js.get_msg(f"TOUR_DLQ_{run}", seq=1)
    error = (letter.headers or {}).get("Jsflow-Error-Message", "")
    say("flow", f"2 orders priced and published; 1 poison order dead-lettered: {error!r}")


# -- 5. tasks with a dependency, a retry and progress --------------------------------------


async def tasks_with_dependency(client: jsflow.Client) -> None:
    app = jsflow.App(client, f"tour{uuid.uuid4().hex[:6]}")
    tries = 0

    @app.task(retries=2, backoff=0.2)
    async def fetch_rates(currency: str) -> float:
        nonlocal tries
        tries += 1
        if tries == 1:
            raise ConnectionError("rates service timed out")
        for pct in (50, 100):
            await jsflow.current_task().progress(pct, f"{currency} rates")
        return 1.08

    @app.task
    async def monthly_report(month: str) -> str:
        return f"report {month} ready"

    async with app.worker():
        fetch = await fetch_rates.submit("EUR")
        report = await monthly_report.submit("2026-11", depends_on=[fetch])
        async for event in fetch.events():
            extra = f" {event.progress:.0f}%" if event.kind == "progress" else ""
            extra += f" ({event.error_type})" if event.kind == "retrying" else ""
            say("tasks", f"fetch_rates {event.kind}{extra}")
        say("tasks", f"fetch_rates -> {await fetch.result(timeout=20)} after {tries} attempts")
        say("tasks", f"monthly_report waited for it -> {await report.result(timeout=20)!r}")


async def main(url: str | None) -> int:
    print("jsflow tour: state, locks, rate limits, flows and tasks on one NATS JetStream\n")
    async with jsflow.ensure_server(url) as server_url, await jsflow.connect(server_url) as client:
        await typed_state(client)
        await lock_with_fencing(client)
        await shared_limiter(server_url)
        await flow_with_dead_letter(client)
        await tasks_with_dependency(client)
    print(
        "\nAll five ran on one server, with no Redis, RabbitMQ or Celery beside it.\n"
        "Next: examples/ (orders.py, locks.py, rate_limit.py, tasks_demo.py, ...), and the CLI:\n"
        "  jsflow server                                # a local nats-server with JetStream\n"
        "  jsflow worker examples.tasks_demo:build_app  # run an app's tasks\n"
        "  jsflow tasks list   |   jsflow dlq list   |   jsflow --help"
    )
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=None, help="NATS server (default: an embedded one)")
    logging.basicConfig(level=logging.ERROR)
    sys.exit(asyncio.run(main(parser.parse_args().url)))
