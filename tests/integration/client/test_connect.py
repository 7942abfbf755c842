"""connect(): the first connect fails fast with a typed error naming the cause, TLS never
falls back to plain text, and no message shows a password."""

from __future__ import annotations

import asyncio
import ssl
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trustme

import jsflow
from jsflow._js.connection import redact_url
from jsflow.errors import (
    AuthorizationError,
    ConfigError,
    ConnectionFailedError,
    NotNatsServerError,
    TLSError,
)

pytestmark = pytest.mark.asyncio(loop_scope="session")

PASSWORD = "pw-s3cret-9f2a"
TOKEN = "tok-s3cret-77c1"


def chain_texts(exc: BaseException | None) -> str:
    texts = []
    while exc is not None:
        texts.append(f"{exc!s} {exc!r}")
        exc = exc.__cause__ or exc.__context__
    return "\n".join(texts)


@asynccontextmanager
async def fake_server(
    handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
) -> AsyncIterator[int]:
    """A TCP listener on 127.0.0.1 running ``handler`` per connection; yields its port."""

    async def run(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await handler(reader, writer)
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(run, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


def fake_nats(info: str, received: list[bytes]) -> Callable[..., Awaitable[None]]:
    """A listener that sends ``info`` as its INFO line and records what the client sends."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(f"INFO {info}\r\n".encode())
        await writer.drain()
        while chunk := await reader.read(4096):
            received.append(chunk)

    return handler


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


@pytest.mark.parametrize("url", ["http://127.0.0.1:8222", "https://h:1", "ftp://u:pw@h"])
async def test_an_unsupported_url_scheme_is_a_config_error(url: str) -> None:
    async with asyncio.timeout(15):
        with pytest.raises(ConfigError, match="scheme") as caught:
            await jsflow.connect(url)
    assert "pw" not in str(caught.value)


# -- TLS -----------------------------------------------------------------------------------


async def test_a_tls_context_with_a_plain_websocket_url_is_refused_before_connecting() -> None:
    async with asyncio.timeout(15):
        with pytest.raises(ConfigError, match="wss://"):
            await jsflow.connect("ws://u:pw@127.0.0.1:1", tls=ssl.create_default_context())


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@asynccontextmanager
async def tls_server(ca: trustme.CA, tmp_path: Path) -> AsyncIterator[jsflow.EmbeddedServer]:
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert_path, key_path = tmp_path / "server.pem", tmp_path / "server.key"
    cert.cert_chain_pems[0].write_to_path(str(cert_path))
    cert.private_key_pem.write_to_path(str(key_path))
    args = ["--tlscert", str(cert_path), "--tlskey", str(key_path)]
    async with jsflow.EmbeddedServer(args=args) as server:
        yield server


async def test_an_untrusted_certificate_fails_with_tls_error(
    ca: trustme.CA, tmp_path: Path
) -> None:
    async with tls_server(ca, tmp_path) as server, asyncio.timeout(15):
        with pytest.raises(TLSError, match="certificate"):
            await jsflow.connect(f"tls://127.0.0.1:{server.port}")


async def test_a_trusted_certificate_connects(ca: trustme.CA, tmp_path: Path) -> None:
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    async with tls_server(ca, tmp_path) as server, asyncio.timeout(15):
        client = await jsflow.connect(f"tls://127.0.0.1:{server.port}", tls=ctx)
        async with client:
            await client.nc.flush(timeout=5)
            assert client.nc.connected_url is not None


async def test_tls_url_never_sends_the_password_to_a_server_without_tls(ca: trustme.CA) -> None:
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    received: list[bytes] = []
    info = '{"server_id":"fake","version":"2.12.0","max_payload":1048576,"auth_required":true}'
    async with fake_server(fake_nats(info, received)) as port, asyncio.timeout(15):
        for kwargs in ({"tls": ctx}, {}):
            with pytest.raises(TLSError, match="plain text") as caught:
                await jsflow.connect(f"tls://alice:{PASSWORD}@127.0.0.1:{port}", **kwargs)
            assert PASSWORD not in chain_texts(caught.value)
        # a tls= context asks for TLS whatever the scheme
        with pytest.raises(TLSError):
            await jsflow.connect(f"nats://alice:{PASSWORD}@127.0.0.1:{port}", tls=ctx)
    assert PASSWORD.encode() not in b"".join(received)
    assert b"CONNECT" not in b"".join(received)


async def test_tls_url_upgrades_when_the_server_only_offers_tls(ca: trustme.CA) -> None:
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    received: list[bytes] = []
    info = '{"server_id":"fake","version":"2.12.0","max_payload":1048576,"tls_available":true}'
    async with fake_server(fake_nats(info, received)) as port, asyncio.timeout(15):
        with pytest.raises(ConnectionFailedError):
            await jsflow.connect(f"tls://alice:{PASSWORD}@127.0.0.1:{port}", tls=ctx)
    sent = b"".join(received)
    assert sent.startswith(b"\x16")  # a TLS ClientHello, not a plain-text CONNECT
    assert PASSWORD.encode() not in sent


# -- redaction and configuration ----------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("nats://user:secret@host:4222", "nats://user:***@host:4222"),
        ("nats://token@host", "nats://***@host"),
        ("tls://u:p@ss@host:1/x?y", "tls://u:***@host:1/x?y"),
        ("user:secret@host:4222", "user:***@host:4222"),
        ("nats://host:4222", "nats://host:4222"),
        ("not a url", "not a url"),
    ],
)
async def test_redact_url_hides_the_password_or_token(url: str, shown: str) -> None:
    assert redact_url(url) == shown


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


@pytest.mark.parametrize(
    ("args", "kwargs", "names"),
    [
        ((None,), {}, "url_or_urls"),
        ((123,), {}, "url_or_urls"),
        (([],), {}, "url_or_urls"),
        ((["nats://127.0.0.1:1", 5],), {}, "url_or_urls"),
        (("nats://h:notaport",), {}, "port"),
        (("nats://127.0.0.1:1",), {"timeout": "5"}, "timeout"),
        (("nats://127.0.0.1:1",), {"timeout": -1}, "timeout"),
        (("nats://127.0.0.1:1",), {"connect_timeout": "2"}, "connect_timeout"),
        (("nats://127.0.0.1:1",), {"tls": "ctx"}, "tls"),
    ],
)
async def test_wrong_connect_arguments_are_config_errors_naming_the_parameter(
    args: tuple[object, ...], kwargs: dict[str, object], names: str
) -> None:
    async with asyncio.timeout(15):
        with pytest.raises(ConfigError, match=names):
            await jsflow.connect(*args, **kwargs)  # type: ignore[arg-type]


async def test_creds_without_the_nkeys_package_is_a_config_error_with_a_hint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    creds = tmp_path / "user.creds"
    creds.write_text("-----BEGIN NATS USER JWT-----\nx\n------END NATS USER JWT------\n")
    monkeypatch.setitem(sys.modules, "nkeys", None)  # import nkeys -> ModuleNotFoundError
    async with asyncio.timeout(15):
        with pytest.raises(ConfigError, match="pip install nkeys"):
            await jsflow.connect("nats://127.0.0.1:1", user_credentials=str(creds))
        with pytest.raises(ConfigError, match="user_credentials"):
            await jsflow.connect("nats://127.0.0.1:1", user_credentials=str(tmp_path / "no"))
