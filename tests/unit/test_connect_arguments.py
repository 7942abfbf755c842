"""connect() arguments: a wrong-typed or unsupported one is a ConfigError naming it, raised
before any connection is tried, and no message shows a password (no server)."""

from __future__ import annotations

import asyncio
import ssl
import sys
from pathlib import Path

import pytest

import jsflow
from jsflow._js.connection import redact_url
from jsflow.errors import ConfigError

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.mark.parametrize("url", ["http://127.0.0.1:8222", "https://h:1", "ftp://u:pw@h"])
async def test_an_unsupported_url_scheme_is_a_config_error(url: str) -> None:
    async with asyncio.timeout(15):
        with pytest.raises(ConfigError, match="scheme") as caught:
            await jsflow.connect(url)
    assert "pw" not in str(caught.value)


async def test_a_tls_context_with_a_plain_websocket_url_is_refused_before_connecting() -> None:
    async with asyncio.timeout(15):
        with pytest.raises(ConfigError, match="wss://"):
            await jsflow.connect("ws://u:pw@127.0.0.1:1", tls=ssl.create_default_context())


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


@pytest.mark.parametrize("bad", [0, 6, "3", 2.5, -1])
async def test_replicas_out_of_range_is_refused_before_any_io(bad: object) -> None:
    with pytest.raises(ConfigError, match="replicas"):
        await jsflow.connect("nats://127.0.0.1:1", replicas=bad)  # type: ignore[arg-type]
