"""The README's code samples work as written (against the real server)."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

import jsflow


@dataclass
class Stock:
    on_hand: int = 0


async def test_object_store_sample(jsflow_client: jsflow.Client, jsflow_bucket: str) -> None:
    stock = await jsflow_client.object_store(jsflow_bucket, Stock)
    entry = await stock.update("sku.42", lambda s: setattr(s, "on_hand", s.on_hand + 5))
    assert (entry.value.on_hand, entry.revision) == (5, entry.revision)
    async with stock.watch("sku.*") as changes:
        change = await anext(changes)
    assert (change.key, change.op, change.value) == ("sku.42", jsflow.Op.PUT, Stock(5))
    await stock.put("promo.spring", Stock(1))
    await stock.delete("promo.spring")
    assert await stock.keys(["sku.*", "promo.>"]) == ["sku.42"]
    assert await stock.purge_deletes(older_than=0) == 1  # (the README's: an hour)


async def test_keys_sample() -> None:
    assert jsflow.key("user", "ada@example.com") == "user.ada=40example=2Ecom"
    assert jsflow.key_parts("user.ada=40example=2Ecom") == ("user", "ada@example.com")


async def test_coordination_sample(jsflow_client: jsflow.Client, jsflow_bucket: str) -> None:
    fences: list[int] = []
    async with jsflow_client.lock(f"invoice-{jsflow_bucket}", ttl=10) as lock:
        fences.append(lock.fencing_token)
    async with jsflow_client.lock(f"invoice-{jsflow_bucket}", ttl=10) as lock:
        fences.append(lock.fencing_token)
        await lock.extend(30)
        assert lock.fencing_token == fences[-1]
    assert fences[1] > fences[0]

    limiter = jsflow_client.rate_limiter(f"api-{jsflow_bucket}", rate=100, per=1.0, burst=20)
    decision = await limiter.try_acquire("tenant-7")
    assert decision.allowed and decision.remaining == 19
    await limiter.acquire("tenant-7", timeout=2.0)
    per_minute = jsflow_client.rate_limiter(
        f"exports-{jsflow_bucket}", "100/minute", algorithm="fixed_window"
    )
    assert (await per_minute.try_acquire("tenant-7")).allowed

    hits = await jsflow_client.counter(f"hits-{jsflow_bucket}").add("page-1")
    assert hits == 1


async def test_flow_sample(jsflow_client: jsflow.Client, jsflow_bucket: str) -> None:
    name = jsflow_bucket.replace("-", "_")
    subject_in, subject_out = f"orders.{name}.new", f"orders.{name}.priced"

    async def price(msg: jsflow.Message[dict]) -> dict | None:  # type: ignore[type-arg]
        return {**msg.data, "total": msg.data["qty"] * 2.5} if msg.data["qty"] else None

    flow = jsflow.FlowHandler(
        jsflow_client,
        source=jsflow.StreamSource(f"ORDERS_{name}", [subject_in], "pricer", dict),
        stages=[price],
        sink=jsflow.StreamSink(subject_out, stream=f"PRICED_{name}"),
        concurrency=32,
        max_deliver=5,
        backoff=[0.1, 0.5, 2.0],
        dead_letter=f"orders.{name}.dead",
        dead_letter_stream=f"ORDERS_DLQ_{name}",
    )
    sub = await jsflow_client.nc.subscribe(subject_out)
    async with flow:
        await flow.ready(timeout=10)
        await jsflow_client.js.publish(subject_in, b'{"id": "o-1", "qty": 2}')
        await jsflow_client.js.publish(subject_in, b'{"id": "o-2", "qty": 0}')
        msg = await sub.next_msg(timeout=10)
    await sub.unsubscribe()
    assert msg.data.replace(b" ", b"") == b'{"id":"o-1","qty":2,"total":5.0}'


async def test_tasks_sample(jsflow_client: jsflow.Client, jsflow_bucket: str) -> None:
    app = jsflow.App(jsflow_client, f"billing-{jsflow_bucket}")

    @app.task(retries=3, timeout=30)
    async def charge(invoice_id: str) -> dict:  # type: ignore[type-arg]
        return {"charged": invoice_id}

    handle = await charge.submit("inv-1")
    worker = asyncio.create_task(app.run_worker(concurrency=16))
    try:
        assert await handle.result(timeout=10) == {"charged": "inv-1"}
    finally:
        worker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await worker
