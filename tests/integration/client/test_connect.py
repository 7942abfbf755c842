"""connect(): the first connect fails fast with a typed error naming the cause (a wrong
password or token, a peer that is not NATS, nothing listening), a hung server in the list
does not hide a good one, reconnects follow service defaults, and no message shows a
password (TLS: test_tls.py; arguments: unit/test_connect_arguments.py)."""

from __future__ import annotations

import asyncio

import pytest

import jsflow
from jsflow.errors import (
    AuthorizationError,
    ConnectionFailedError,
    NotNatsServerError,
)
from tests.support.peers import chain_texts, fake_server

pytestmark = pytest.mark.asyncio(loop_scope="session")

PASSWORD = "pw-s3cret-9f2a"
TOKEN = "tok-s3cret-77c1"


# -- authorization -------------------------------------------------------------------------


async def test_wrong_password_fails_at_once_with_authorization_error() -> None:
    async with jsflow.EmbeddedServer(args=["--user", "alice", "--pass", PASSWORD]) as server:
        url = f"nats://alice:wrong-{PASSWORD}@127.0.0.1:{server.port}"
        async with asyncio.timeout(15):
            with pytest.raises(AuthorizationError) as caught:
                await jsflow.connect(url)
        assert "alice:***@" in str(caught.value)
        assert PASSWORD not in chain_texts(caught.value)


async def test_wrong_token_fails_at_once_with_authorization_error() -> None:
    async with jsflow.EmbeddedServer(args=["--auth", TOKEN]) as server:
        async with asyncio.timeout(15):
            with pytest.raises(AuthorizationError):
                await jsflow.connect(server.url, token=f"wrong-{TOKEN}")
            with pytest.raises(AuthorizationError) as caught:
                await jsflow.connect(f"nats://wrong-{TOKEN}@127.0.0.1:{server.port}")
        assert "nats://***@127.0.0.1" in str(caught.value)
        assert TOKEN not in chain_texts(caught.value)


async def test_reconnects_after_a_good_first_connect_follow_service_defaults() -> None:
    async with jsflow.EmbeddedServer(args=["--user", "alice", "--pass", PASSWORD]) as server:
        url = f"nats://alice:{PASSWORD}@127.0.0.1:{server.port}"
        async with asyncio.timeout(15):
            async with await jsflow.connect(url) as client:
                assert client.nc.options["allow_reconnect"] is True
                assert client.nc.options["max_reconnect_attempts"] == 600
                # when the server goes away and comes back, the client reconnects
                await server.stop()
                await server.start()
                while not client.is_connected:
                    await asyncio.sleep(0.05)
                await client.nc.flush(timeout=5)


# -- not NATS ------------------------------------------------------------------------------


async def test_a_silent_port_fails_with_not_nats_server_error() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()

    async with fake_server(silent) as port, asyncio.timeout(15):
        with pytest.raises(NotNatsServerError, match="INFO"):
            await jsflow.connect(f"nats://127.0.0.1:{port}")


async def test_a_port_answering_http_fails_with_not_nats_server_error() -> None:
    async def http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 400 Bad Request\r\n\r\n")
        await writer.drain()
        await reader.read()

    async with fake_server(http) as port, asyncio.timeout(15):
        with pytest.raises(NotNatsServerError):
            await jsflow.connect(f"nats://127.0.0.1:{port}")


async def test_a_hung_server_in_the_list_does_not_hide_a_good_one(
    jsflow_server: jsflow.EmbeddedServer,
) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()

    async with fake_server(silent) as port, asyncio.timeout(15):
        urls = [f"nats://127.0.0.1:{port}", jsflow_server.url]
        client = await jsflow.connect(urls, dont_randomize=True)  # the hung one first
        async with client:
            await client.nc.flush(timeout=5)


# -- nothing listening ---------------------------------------------------------------------


async def test_no_server_error_does_not_show_the_password() -> None:
    async def closed(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        pass

    async with fake_server(closed) as port:
        pass  # the port is free again: nothing listens there
    async with asyncio.timeout(15):
        with pytest.raises(ConnectionFailedError, match="nothing is listening") as caught:
            await jsflow.connect(f"nats://alice:{PASSWORD}@127.0.0.1:{port}")
    assert "alice:***@" in str(caught.value)
    assert PASSWORD not in chain_texts(caught.value)
