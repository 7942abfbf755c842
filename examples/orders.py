"""Order processing on JetStream: validate -> price -> reserve stock -> confirm.

    .venv/bin/python examples/orders.py [--url nats://...]

Each order is acked only after its confirmation is published. A poison order fails
validation, is retried with backoff, then lands on the dead letter with its error.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from dataclasses import dataclass, field
from typing import Any

import jsflow
from jsflow import FlowHandler, Message, StreamSink, StreamSource

PRICES = {"widget": 2.50, "gadget": 10.00, "gizmo": 7.25}


@dataclass
class Order:
    id: str = ""
    sku: str = ""
    quantity: int = 0
    total: float = 0.0


@dataclass
class Stock:
    on_hand: int = 0
    reserved: list[str] = field(default_factory=list)


async def validate(msg: Message[Order]) -> Order:
    order = msg.data
    if order.quantity <= 0 or order.sku not in PRICES:
        print(f"  validate {order.id}: REJECTED (attempt {msg.delivery})")
        raise ValueError(f"invalid order {order.id}: {order.quantity} x {order.sku!r}")
    print(f"  validate {order.id}: ok")
    return order


async def price(msg: Message[Order]) -> Order:
    order = msg.data
    order.total = round(PRICES[order.sku] * order.quantity, 2)
    print(f"  price    {order.id}: {order.quantity} x {order.sku} = {order.total:.2f}")
    return order


class Reserve:
    """Reserve stock with an optimistic update; idempotent per order id."""

    def __init__(self, stock: jsflow.ObjectStore[Stock]) -> None:
        self.stock = stock

    async def handle(self, msg: Message[Order]) -> dict[str, Any]:
        order = msg.data

        def take(state: Stock) -> None:
            if order.id in state.reserved:
                return
            if state.on_hand < order.quantity:
                raise ValueError(f"out of stock for {order.id}")
            state.on_hand -= order.quantity
            state.reserved.append(order.id)

        entry = await self.stock.update(order.sku, take)
        print(f"  reserve  {order.id}: {order.sku} left {entry.value.on_hand}")
        return {"order": order.id, "total": order.total, "status": "confirmed"}


async def main(url: str | None) -> None:
    async with jsflow.ensure_server(url) as resolved, await jsflow.connect(resolved) as client:
        if not url:
            print(f"started nats-server at {resolved}")
        stock = await client.object_store("orders_stock", Stock)
        for sku in PRICES:
            await stock.put(sku, Stock(on_hand=100))
        flow = FlowHandler(
            client,
            source=StreamSource("ORDERS", "orders.new", "order-pipeline", Order, fetch_timeout=0.2),
            stages=[validate, price, Reserve(stock)],
            sink=StreamSink("orders.confirmed", stream="CONFIRMATIONS"),
            max_deliver=3,
            backoff=[0.2, 0.4],
            dead_letter="orders.dead",
            dead_letter_stream="ORDERS_DLQ",
        )
        orders = [
            Order("o-1", "widget", 4),
            Order("o-2", "gadget", 1),
            Order("o-3", "gizmo", 0),  # poison: quantity 0
            Order("o-4", "widget", 10),
        ]
        async with flow:
            confirmed = await client.js.subscribe("orders.confirmed")
            dead = await client.js.subscribe("orders.dead")
            for order in orders:
                await client.js.publish(
                    "orders.new",
                    jsflow.DataclassCodec(Order).encode(order),
                    headers={"Nats-Msg-Id": order.id, "Jsflow-Correlation-Id": order.id},
                )
                print(f"published {order.id}")
            for _ in range(3):
                msg = await confirmed.next_msg(timeout=10)
                print(f"confirmation: {json.loads(msg.data)}")
                await msg.ack()
            msg = await dead.next_msg(timeout=10)
            headers = msg.headers or {}
            print(
                f"dead letter: {json.loads(msg.data)['id']} after "
                f"{headers['Jsflow-Delivery']} attempts at stage {headers['Jsflow-Stage']}: "
                f"{headers['Jsflow-Error-Type']}: {headers['Jsflow-Error-Message']}"
            )
            await msg.ack()
        snap = flow.metrics.snapshot()
        print(
            f"done: processed={snap.processed} failed_attempts={snap.failed} "
            f"dead_lettered={snap.dead_lettered}"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", help="NATS URL (default: start an embedded server)")
    # jsflow logs through the standard logging module; show its warnings in the demo's style.
    logging.basicConfig(format="  log: %(message)s", stream=sys.stdout)
    asyncio.run(main(parser.parse_args().url))
