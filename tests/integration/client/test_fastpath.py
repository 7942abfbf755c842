"""The short write and reply path of the one nats-py boundary, on a live server: every reply
reaches its own request, a request that times out or is cancelled leaves nothing behind,
writes keep their order, and a server that stops reading pushes back instead of losing data."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

import jsflow


async def test_concurrent_requests_each_get_their_own_reply(
    jsflow_client: jsflow.Client,
) -> None:
    nc = jsflow_client.nc

    async def echo(msg: jsflow._js.Msg) -> None:
        await nc.publish(msg.reply, msg.data)

    sub = await nc.subscribe("fastpath.echo", cb=echo)
    try:
        async with asyncio.timeout(30):
            replies = await asyncio.gather(
                *(nc.request("fastpath.echo", str(i).encode(), timeout=10) for i in range(500))
            )
        assert [r.data for r in replies] == [str(i).encode() for i in range(500)]
        assert not nc._resp_map  # every request's entry went with its reply
    finally:
        await sub.unsubscribe()


async def test_a_request_nobody_answers_times_out_and_leaves_no_entry(
    jsflow_client: jsflow.Client,
) -> None:
    nc = jsflow_client.nc
    sub = await nc.subscribe("fastpath.silent")  # a responder that never answers
    try:
        async with asyncio.timeout(10):
            with pytest.raises(jsflow._js.nats_errors.TimeoutError):
                await nc.request("fastpath.silent", b"x", timeout=0.2)
            waiting = asyncio.ensure_future(nc.request("fastpath.silent", b"y", timeout=5))
            await asyncio.sleep(0.05)
            waiting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiting
        assert not nc._resp_map
        # and the connection goes on answering
        assert (await jsflow_client.js.account_info()) is not None
    finally:
        await sub.unsubscribe()


async def test_no_responders_is_still_reported(jsflow_client: jsflow.Client) -> None:
    with pytest.raises(jsflow._js.nats_errors.NoRespondersError):
        await jsflow_client.nc.request("fastpath.nobody.listens", b"", timeout=5)


async def test_writes_keep_their_order_and_a_stalled_server_pushes_back_without_loss(
    jsflow_server: jsflow.EmbeddedServer,
) -> None:
    """SIGSTOP the server while one connection writes ~12 MB: the socket backs up, the
    writes wait for it to drain, and after SIGCONT every message arrives, in order."""
    count, body = 400, b"z" * 32_000
    async with (
        await jsflow.connect(jsflow_server.url) as reader_client,
        await jsflow.connect(jsflow_server.url) as writer_client,
    ):
        got: list[int] = []
        done = asyncio.Event()

        async def collect(msg: jsflow._js.Msg) -> None:
            got.append(int(msg.headers["N"]) if msg.headers else -1)
            if len(got) == count:
                done.set()

        sub = await reader_client.nc.subscribe("fastpath.bulk", cb=collect)
        await reader_client.nc.flush()
        pid = jsflow_server.pid
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)
        try:

            async def write() -> None:
                for i in range(count):
                    await writer_client.nc.publish("fastpath.bulk", body, headers={"N": str(i)})

            writing = asyncio.ensure_future(write())
            await asyncio.sleep(0.5)
        finally:
            os.kill(pid, signal.SIGCONT)
        async with asyncio.timeout(60):
            await writing
            await writer_client.nc.flush()
            await done.wait()
        await sub.unsubscribe()
        assert got == list(range(count))
