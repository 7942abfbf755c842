"""connect() over TLS: an untrusted certificate is a TLSError, a trusted one connects, and a
TLS URL never falls back to plain text nor sends a password to a server without TLS."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trustme

import jsflow
from jsflow.errors import ConnectionFailedError, TLSError
from tests.support.peers import chain_texts, fake_nats, fake_server

pytestmark = pytest.mark.asyncio(loop_scope="session")

PASSWORD = "pw-s3cret-9f2a"


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
