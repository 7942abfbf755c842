"""Opening the nats-py connection (always a :class:`GuardedClient`).

nats-py's reconnect policy also governs the FIRST connect: with service defaults a wrong
password, an untrusted certificate or a port that never speaks NATS is retried for minutes
and then reported as "no servers available". So the first connect is made here with
reconnects off and a bounded time, its failure is mapped to a typed error that names the
cause, and only then is the caller's reconnect policy put in place for later disconnects.
URLs in every message are redacted (:func:`redact_url`) and no message carries a secret.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import ssl
import time
from collections.abc import Iterable
from typing import Any
from urllib.parse import unquote, urlsplit

import nats.errors
from nats.aio.client import DEFAULT_CONNECT_TIMEOUT, DEFAULT_MAX_RECONNECT_ATTEMPTS, Srv

from jsflow._js.guard import GuardedClient
from jsflow._validate import duration, one_of, shorten
from jsflow.errors import (
    AuthorizationError,
    ConfigError,
    ConnectionFailedError,
    JsflowError,
    NotNatsServerError,
    TLSError,
)

__all__ = [
    "check_servers",
    "jetstream_ready",
    "open_connection",
    "redact_url",
    "url_secrets",
]

SCHEMES = ("nats", "tls", "ws", "wss")
# nats-py discards a server after more than this many failed attempts; 0 would mean "never".
_FIRST_CONNECT_ATTEMPTS = 1
# The first connect waits for TCP, INFO, the TLS handshake and PONG, each up to
# connect_timeout: this bounds the whole, however many servers are listed.
_FIRST_CONNECT_WAITS = 5
_NO_SERVER_HINT = (
    "start nats-server -js (or jsflow.EmbeddedServer) or pass the URL of a running server"
)


def redact_url(url: str) -> str:
    """``url`` without its secret: ``nats://u:pw@h`` -> ``nats://u:***@h``,
    ``nats://token@h`` -> ``nats://***@h``. Works on malformed URLs too."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    end = len(rest)
    for stop in "/?#":
        at = rest.find(stop)
        if at != -1:
            end = min(end, at)
    netloc, tail = rest[:end], rest[end:]
    if "@" not in netloc:
        return url
    userinfo, host = netloc.rsplit("@", 1)
    user, colon, _ = userinfo.partition(":")
    hidden = f"{user}:***" if colon else "***"
    return f"{scheme}{sep}{hidden}@{host}{tail}"


def url_secrets(url: str) -> list[str]:
    """The password, or the token, in ``url`` (raw and percent-decoded)."""
    netloc = urlsplit(url if "://" in url else f"nats://{url}").netloc
    if "@" not in netloc:
        return []
    userinfo = netloc.rsplit("@", 1)[0]
    user, colon, password = userinfo.partition(":")
    secret = password if colon else user
    return [s for s in {secret, unquote(secret)} if s]


def check_servers(value: object) -> list[str]:
    """``url_or_urls`` as a non-empty list of URLs nats-py can use, or :class:`ConfigError`."""
    if isinstance(value, str):
        urls: list[object] = [value]
    elif isinstance(value, list | tuple):
        urls = list(value)
    else:
        raise ConfigError(
            f"url_or_urls must be a server URL or a list of them, got {type(value).__name__}"
        )
    if not urls:
        raise ConfigError("url_or_urls is empty: give at least one server URL")
    checked: list[str] = []
    for url in urls:
        if not isinstance(url, str) or not url.strip():
            shown = redact_url(url) if isinstance(url, str) else type(url).__name__
            raise ConfigError(f"url_or_urls holds {shown!r}, not a server URL")
        checked.append(_check_url(url))
    websockets = {urlsplit(url).scheme in ("ws", "wss") for url in checked}
    if len(websockets) > 1:
        raise ConfigError("url_or_urls mixes ws:// or wss:// with nats:// or tls:// URLs")
    return checked


def _check_url(url: str) -> str:
    full = url if "://" in url else f"nats://{url}"
    parsed = urlsplit(full)
    if parsed.scheme.lower() not in SCHEMES:
        raise ConfigError(
            f"url_or_urls: unsupported scheme {shorten(parsed.scheme)} in "
            f"{shorten(redact_url(url))}: use nats://, tls://, ws:// or wss://"
        )
    try:
        parsed.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise ConfigError(f"url_or_urls: bad port in {shorten(redact_url(url))}") from None
    if not parsed.hostname:
        raise ConfigError(f"url_or_urls: no host in {shorten(redact_url(url))}")
    return url


class _PlainTextRefused(nats.errors.Error):
    """TLS was asked for and the server does not offer it (nothing was sent)."""

    def __str__(self) -> str:
        return "the server does not offer TLS; jsflow never falls back to plain text"


class _Connection(GuardedClient):
    """A :class:`GuardedClient` that never sends CONNECT (with its credentials) in plain text
    when TLS was asked for, and keeps what went wrong during its first connect."""

    def __init__(self, error_cb: Any = None) -> None:
        super().__init__()
        self.saw_info = False
        self.first_connect = True
        self.first_errors: list[BaseException] = []
        self._user_error_cb = error_cb

    async def on_error(self, exc: Exception) -> None:
        """nats-py's ``error_cb``: the first connect's errors are raised, not logged."""
        if self.first_connect:
            self.first_errors.append(exc)
        elif self._user_error_cb is not None:
            await self._user_error_cb(exc)

    def _tls_wanted(self) -> bool:
        server = self._current_server
        scheme = server.uri.scheme if server is not None else "nats"
        if scheme in ("ws", "wss") or self.options.get("tls_handshake_first"):
            return False  # wss is TLS from the first byte; so is a handshake-first client
        return scheme == "tls" or self.options.get("tls") is not None

    async def _process_info(self, info: dict[str, Any], initial_connection: bool = False) -> None:
        if initial_connection:
            # Called by nats-py between reading INFO and upgrading to TLS / sending CONNECT,
            # on the first connect and on every reconnect: the one spot to refuse or force TLS.
            self.saw_info = True
            if self._tls_wanted() and not info.get("tls_required"):
                if not info.get("tls_available"):
                    raise _PlainTextRefused
                info["tls_required"] = True  # the same dict nats-py checks next: upgrade
        await super()._process_info(info, initial_connection)


async def open_connection(servers: list[str], **options: Any) -> GuardedClient:
    """Connect a :class:`GuardedClient` to ``servers`` with nats-py ``options``.

    The first connect tries each server once (a hung or foreign one does not hide the
    others) and fails within about ``5 * connect_timeout`` seconds with a typed error:
    :class:`AuthorizationError`, :class:`TLSError`, :class:`NotNatsServerError`,
    :class:`ConfigError` or :class:`ConnectionFailedError`. ``allow_reconnect`` and
    ``max_reconnect_attempts`` (nats-py's) then apply to later disconnects, over all servers.
    """
    servers = check_servers(servers)
    secrets = _secrets(servers, options)
    allow_reconnect = bool(options.pop("allow_reconnect", True))
    max_reconnect = options.pop("max_reconnect_attempts", DEFAULT_MAX_RECONNECT_ATTEMPTS)
    connect_timeout = duration(
        "connect_timeout", options.setdefault("connect_timeout", DEFAULT_CONNECT_TIMEOUT)
    )
    if options.get("tls") is not None:
        one_of("tls", options["tls"], ssl.SSLContext)
        if any(urlsplit(url).scheme == "ws" for url in servers):
            # A websocket is plain text unless it is wss://: never send in clear what
            # the caller asked to protect.
            raise ConfigError("tls= was given with a ws:// URL, which is plain text: use wss://")
    _check_credentials(options)
    user_error_cb = options.pop("error_cb", None)
    order = list(servers)
    if not options.get("dont_randomize"):
        random.shuffle(order)
    bound = _FIRST_CONNECT_WAITS * connect_timeout
    failures: list[tuple[str, BaseException, _Connection]] = []
    nc: _Connection | None = None
    try:
        async with asyncio.timeout(bound):
            for url in order:
                nc = _Connection(user_error_cb)
                try:
                    await nc.connect(
                        servers=[url],
                        error_cb=nc.on_error,
                        allow_reconnect=False,
                        max_reconnect_attempts=_FIRST_CONNECT_ATTEMPTS,
                        **options,
                    )
                    break
                except ImportError as exc:
                    raise _missing_module(exc, options) from None
                except Exception as exc:
                    await _discard(nc)
                    failures.append((url, exc, nc))
                    nc = None
    except TimeoutError as exc:
        if nc is None or nc.is_connected:
            raise  # not ours: raised by a callback of the caller's
        await _discard(nc)
        failures.append(("", exc, nc))
    except BaseException:
        if nc is not None:
            await _discard(nc)
        raise
    if nc is None:
        errors = [
            _first_connect_error(
                exc,
                nc=failed,
                url=url,
                servers=servers,
                connect_timeout=connect_timeout,
                bound=bound if not url else None,
                secrets=secrets,
            )
            for url, exc, failed in failures
        ]
        # The most telling cause wins: a refused password says more than a dead node.
        best = min(range(len(errors)), key=lambda i: _RANK.get(type(errors[i]), len(_RANK)))
        cause = failures[best][1]
        # Raised outside the except block, so no implicit __context__; the cause is kept
        # only when no secret shows in its chain.
        raise errors[best] from (None if _leaks(cause, secrets) else cause)
    nc.first_connect = False
    nc.options["allow_reconnect"] = allow_reconnect
    nc.options["max_reconnect_attempts"] = max_reconnect
    _restore_pool(nc, servers)
    return nc


_RANK: dict[type[JsflowError], int] = {AuthorizationError: 0, TLSError: 1, NotNatsServerError: 2}


def _secrets(servers: Iterable[str], options: dict[str, Any]) -> list[str]:
    found = [secret for url in servers for secret in url_secrets(url)]
    for name in ("password", "token", "nkeys_seed_str"):
        value = options.get(name)
        if isinstance(value, str) and value:
            found.append(value)
    return found


def _check_credentials(options: dict[str, Any]) -> None:
    creds = options.get("user_credentials")
    if isinstance(creds, str | os.PathLike) and not os.path.isfile(creds):
        raise ConfigError(f"user_credentials: no such file {shorten(os.fspath(creds))!r}")
    seed = options.get("nkeys_seed")
    if isinstance(seed, str | os.PathLike) and not os.path.isfile(seed):
        raise ConfigError(f"nkeys_seed: no such file {shorten(os.fspath(seed))!r}")


def _missing_module(exc: ImportError, options: dict[str, Any]) -> JsflowError:
    given = [n for n in ("user_credentials", "nkeys_seed", "nkeys_seed_str") if options.get(n)]
    if exc.name == "nkeys" and given:
        return ConfigError(
            f"{given[0]} needs the nkeys package, which is not installed: pip install nkeys"
        )
    return ConfigError(f"connect() needs the {exc.name or 'missing'} package: {exc}")


async def _discard(nc: _Connection) -> None:
    """Close what a failed first connect left open (nats-py leaves its socket open)."""
    with contextlib.suppress(Exception):
        async with asyncio.timeout(2.0):
            await nc._close(nc.CLOSED, do_cbs=False)


def _restore_pool(nc: _Connection, servers: list[str]) -> None:
    """Put back servers the first connect gave up on, so that reconnects can use them."""
    known = {srv.uri.netloc for srv in nc._server_pool}
    for url in servers:
        with contextlib.suppress(Exception):
            uri = nc._parse_server_uri(url)
            if uri.netloc not in known:
                nc._server_pool.append(Srv(uri))
                known.add(uri.netloc)


def _leaks(exc: BaseException | None, secrets: list[str]) -> bool:
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        text = f"{exc!s} {exc!r}"
        if any(secret in text for secret in secrets):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _scrub(text: str, secrets: list[str]) -> str:
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def _describe(exc: BaseException, secrets: list[str]) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError) and exc.verify_message:
        text = f"certificate verify failed: {exc.verify_message}"
    elif isinstance(exc, ssl.SSLError) and exc.reason:
        text = str(exc.reason)
    else:
        text = str(exc) or type(exc).__name__
    return _scrub(text.removeprefix("nats: ").strip("'"), secrets)


def _first_connect_error(
    exc: BaseException,
    *,
    nc: _Connection,
    url: str,
    servers: list[str],
    connect_timeout: float,
    bound: float | None,
    secrets: list[str],
) -> JsflowError:
    """The typed error for one failed first-connect attempt (``url``: the server tried, or
    ``""`` when the overall ``bound`` ran out)."""
    head = f"cannot connect to {', '.join(redact_url(u) for u in servers)}"
    if url and len(servers) > 1:
        head += f" ({redact_url(url)})"
    cause = exc
    seen = nc.first_errors
    tcp_level = isinstance(exc, nats.errors.NoServersError)
    if tcp_level and seen:
        # nats-py gave up on the server: its last attempt's error says why.
        cause = next((e for e in reversed(seen) if isinstance(e, ssl.SSLError)), seen[-1])
    text = _describe(cause, secrets)
    lower = text.lower()
    if isinstance(cause, _PlainTextRefused):
        return TLSError(f"{head}: TLS was asked for (tls:// or tls=) but {text}")
    if isinstance(cause, ssl.SSLError | ssl.CertificateError):
        return TLSError(
            f"{head}: TLS handshake failed ({text}); check the server's certificate and the "
            "CA of the tls= context"
        )
    if isinstance(cause, nats.errors.AuthorizationError) or (
        "authoriz" in lower or "authenticat" in lower
    ):
        return AuthorizationError(
            f"{head}: authorization failed ({text}); check the user and password, token, "
            "nkey or credentials"
        )
    if "tls" in lower or "secure connection" in lower:
        return TLSError(f"{head}: {text}")
    if bound is not None:
        return ConnectionFailedError(f"{head}: no connection within {bound:g}s")
    if tcp_level:
        if isinstance(cause, ConnectionRefusedError) or not seen:
            return ConnectionFailedError(f"{head}: nothing is listening there; {_NO_SERVER_HINT}")
        if isinstance(cause, TimeoutError):
            return ConnectionFailedError(
                f"{head}: no TCP connection within {connect_timeout:g}s; {_NO_SERVER_HINT}"
            )
        return ConnectionFailedError(f"{head}: {text}; {_NO_SERVER_HINT}")
    if not nc.saw_info and (
        isinstance(cause, TimeoutError | nats.errors.UnexpectedEOF)
        or "expecting info" in lower
        or "info message" in lower
    ):
        silent = isinstance(cause, TimeoutError)
        return NotNatsServerError(
            f"{head}: not a NATS server (it "
            + (f"sent no INFO line within {connect_timeout:g}s" if silent else "did not send INFO")
            + "); check the host and the port (NATS clients use 4222 by default, not the "
            "HTTP monitoring port)"
        )
    if isinstance(cause, TimeoutError):
        return ConnectionFailedError(
            f"{head}: the server did not finish the handshake within {connect_timeout:g}s"
        )
    return ConnectionFailedError(f"{head}: {text}")


async def jetstream_ready(url: str, deadline: float) -> bool:
    """Whether JetStream answers an account request through ``url`` before ``deadline``
    (a ``time.monotonic()`` value)."""
    nc = await open_connection([url], allow_reconnect=False)
    try:
        js = nc.jetstream(timeout=2.0)
        while True:
            try:
                await js.account_info()
                return True
            except Exception:
                if time.monotonic() > deadline:
                    return False
                await asyncio.sleep(0.1)
    finally:
        await nc.close()
