"""WaitGroup: a distributed count that waiters in any client see reach zero."""

from __future__ import annotations

import asyncio

import pytest

import jsflow
from jsflow.client import Client
from jsflow.coordination.wait_group import NegativeCountError
from jsflow.server import EmbeddedServer


async def test_wait_returns_when_count_reaches_zero_across_clients(
    jsflow_server: EmbeddedServer, jsflow_client: Client, jsflow_bucket: str
) -> None:
    # given a wait group with 3 outstanding pieces of work
    wg = jsflow_client.wait_group("batch", bucket=jsflow_bucket, recheck=30)
    assert await wg.add(3) == 3
    waiter = asyncio.create_task(wg.wait(timeout=20))
    await asyncio.sleep(0.1)
    # when workers in another client finish them
    async with await jsflow.connect(jsflow_server.url) as other:
        remote = other.wait_group("batch", bucket=jsflow_bucket)
        assert await remote.done() == 2
        await asyncio.sleep(0.1)
        assert not waiter.done()
        await remote.done()
        await remote.done()
    # then the waiter returns (woken by the watch, not the 30 s recheck)
    await asyncio.wait_for(waiter, 10)
    assert await wg.count() == 0


async def test_wait_on_unused_group_returns_at_once(
    jsflow_client: Client, jsflow_bucket: str
) -> None:
    await jsflow_client.wait_group("fresh", bucket=jsflow_bucket).wait(timeout=5)


async def test_done_below_zero_raises_and_writes_nothing(
    jsflow_client: Client, jsflow_bucket: str
) -> None:
    # given a group with count 1
    wg = jsflow_client.wait_group("batch", bucket=jsflow_bucket)
    await wg.add(1)
    await wg.done()
    # when done() is called once too often, then a typed error and the count stays 0
    with pytest.raises(NegativeCountError):
        await wg.done()
    assert await wg.count() == 0
    assert isinstance(NegativeCountError("x"), jsflow.JsflowError)


async def test_wait_times_out_with_typed_error(jsflow_client: Client, jsflow_bucket: str) -> None:
    wg = jsflow_client.wait_group("batch", bucket=jsflow_bucket)
    await wg.add(1)
    with pytest.raises(jsflow.RequestTimeoutError):
        await wg.wait(timeout=0.3)


async def test_concurrent_adds_and_dones_balance(
    jsflow_server: EmbeddedServer, jsflow_client: Client, jsflow_bucket: str
) -> None:
    # given many concurrent adds then dones from two clients
    async with await jsflow.connect(jsflow_server.url) as other:
        groups = [c.wait_group("batch", bucket=jsflow_bucket) for c in (jsflow_client, other)]
        await asyncio.gather(*(groups[i % 2].add(1) for i in range(40)))
        assert await groups[0].count() == 40
        waiter = asyncio.create_task(groups[0].wait(timeout=20))
        await asyncio.gather(*(groups[i % 2].done() for i in range(40)))
        # then the count is exactly zero and the waiter returns
        await asyncio.wait_for(waiter, 10)
        assert await groups[1].count() == 0


@pytest.mark.parametrize("n", [1.5, "1", True])
async def test_add_rejects_non_int(jsflow_client: Client, n: object) -> None:
    with pytest.raises(jsflow.ConfigError):
        await jsflow_client.wait_group("batch").add(n)  # type: ignore[arg-type]
