"""The one boundary to nats-py, on a live connection: no protocol line or message the server
would answer by closing the connection is ever sent, and the client lives on."""

from __future__ import annotations

import asyncio

import pytest

import jsflow


async def _still_usable(client: jsflow.Client) -> None:
    sub = await client.nc.subscribe("boundary.echo")
    await client.nc.publish("boundary.echo", b"ok")
    msg = await sub.next_msg(timeout=5)
    assert msg.data == b"ok"
    await sub.unsubscribe()
    assert client.is_connected


async def test_a_subject_too_long_for_the_control_line_is_refused_and_the_client_lives(
    jsflow_client: jsflow.Client,
) -> None:
    async with asyncio.timeout(20):
        with pytest.raises(jsflow.ControlLineTooLongError):
            await jsflow_client.nc.publish("a." + "b" * 5000, b"x")
        with pytest.raises(jsflow.ControlLineTooLongError):
            await jsflow_client.nc.publish("ok", b"x", reply="r" * 5000)
        with pytest.raises(jsflow.ControlLineTooLongError):
            await jsflow_client.nc.subscribe("s." + "x" * 5000)
        await _still_usable(jsflow_client)


async def test_headers_count_against_max_payload_and_the_client_lives(
    jsflow_client: jsflow.Client,
) -> None:
    limit = jsflow_client.nc.max_payload
    async with asyncio.timeout(20):
        # the body alone fits; with its headers it does not
        with pytest.raises(jsflow.PayloadTooLargeError):
            await jsflow_client.nc.publish(
                "boundary.big", b"x" * (limit - 100), headers={"Jsflow-Pad": "p" * 200}
            )
        with pytest.raises(jsflow.PayloadTooLargeError):
            await jsflow_client.js.publish(
                "boundary.big", b"x" * (limit - 10), headers={"A": "b" * 50}
            )
        await _still_usable(jsflow_client)


async def test_a_huge_kv_key_through_nats_py_itself_is_refused_before_sending(
    jsflow_client: jsflow.Client, jsflow_bucket: str
) -> None:
    kv = await jsflow_client.js.create_key_value(bucket=jsflow_bucket)
    async with asyncio.timeout(20):
        with pytest.raises(jsflow.ControlLineTooLongError):
            await kv.put("k" * 5000, b"v")
        await kv.put("k", b"v")
        assert (await kv.get("k")).value == b"v"
    await jsflow_client.js.delete_key_value(jsflow_bucket)
