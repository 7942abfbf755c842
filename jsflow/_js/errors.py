"""nats-py's exceptions mapped into jsflow's tree, through one table of server codes."""

from __future__ import annotations

import json
from types import TracebackType
from typing import Any, NoReturn

import nats.errors
import nats.js.api
import nats.js.errors

from jsflow._js.codes import MESSAGE_TOO_LARGE, WRONG_LAST_SEQUENCE
from jsflow.errors import (
    BucketError,
    ConflictError,
    ConnectionClosedError,
    ConnectionFailedError,
    JsflowError,
    NoStreamError,
    PayloadTooLargeError,
    RequestTimeoutError,
    ServerError,
)

__all__ = ["check_pub_ack", "map_nats_errors", "raise_api_error"]


class map_nats_errors:
    """Translate nats-py exceptions raised in the block into the jsflow tree.

    A plain class rather than ``@contextmanager``: it is entered around every request, and
    entering it costs nothing but its three fields (the message is built only on failure).
    """

    __slots__ = ("bucket", "key", "subject")

    def __init__(
        self, *, bucket: str | None = None, key: str | None = None, subject: str | None = None
    ) -> None:
        self.bucket = bucket
        self.key = key
        self.subject = subject

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None or not isinstance(exc, Exception) or isinstance(exc, JsflowError):
            return  # nothing raised, or not nats-py's: it propagates as it is
        mapped = _mapped(exc, self.bucket, self.key, self.subject)
        if mapped is not None:
            raise mapped from exc


def _mapped(
    exc: Exception, bucket: str | None, key: str | None, subject: str | None
) -> JsflowError | None:
    """The jsflow error for nats-py's ``exc`` (``None``: not nats-py's, raise it as it is).
    The where-suffix is built here, only when something failed."""
    where = ", ".join(
        f"{name}={value!r}"
        for name, value in (("bucket", bucket), ("key", key), ("subject", subject))
        if value is not None
    )
    suffix = f" ({where})" if where else ""
    if isinstance(exc, nats.js.errors.KeyWrongLastSequenceError):
        return ConflictError(bucket, key)
    if isinstance(exc, nats.js.errors.BucketNotFoundError):
        return BucketError(f"bucket not found{suffix}")
    if isinstance(exc, nats.js.errors.APIError):
        if exc.err_code in WRONG_LAST_SEQUENCE:
            return ConflictError(bucket, key)
        if exc.err_code == MESSAGE_TOO_LARGE:
            return PayloadTooLargeError(f"{exc.description}{suffix}")
        return ServerError(f"{exc.description or exc} (code {exc.err_code}){suffix}")
    if isinstance(exc, nats.errors.MaxPayloadError):
        return PayloadTooLargeError(f"payload exceeds the server's max_payload{suffix}")
    if isinstance(exc, (TimeoutError, nats.errors.TimeoutError)):
        return RequestTimeoutError(f"request timed out{suffix}")
    if isinstance(exc, nats.errors.NoRespondersError):
        return ServerError(f"no responders: JetStream unavailable{suffix}")
    if isinstance(exc, nats.js.errors.NoStreamResponseError):
        return NoStreamError(
            f"no stream answered{suffix}: none captures the subject (declare it first), or "
            "its stream has no leader yet (a failover: retry)"
        )
    if isinstance(exc, nats.errors.ConnectionClosedError):
        return ConnectionClosedError(f"the connection is closed{suffix}")
    if isinstance(
        exc,
        (
            nats.errors.NoServersError,
            nats.errors.StaleConnectionError,
            nats.errors.ConnectionDrainingError,
            nats.errors.ConnectionReconnectingError,
            OSError,
        ),
    ):
        return ConnectionFailedError(f"{type(exc).__name__}: {exc}{suffix}")
    if isinstance(exc, nats.errors.Error):
        return ServerError(f"{type(exc).__name__}: {exc}{suffix}")
    return None


_NO_RESPONDERS = "503"


def check_pub_ack(reply: Any) -> None:
    """Raise nats-py's error for the reply to a JetStream publish (``reply``: its
    :class:`nats.aio.msg.Msg`) unless it acknowledges the message: no stream answered, or
    the server refused it. Map it with :func:`map_nats_errors`."""
    if reply.headers and reply.headers.get(nats.js.api.Header.STATUS) == _NO_RESPONDERS:
        raise nats.js.errors.NoStreamResponseError
    try:
        answer = json.loads(reply.data)
    except ValueError:
        raise nats.errors.Error(f"not a JetStream ack: {reply.data[:200]!r}") from None
    if type(answer) is dict and "error" in answer:
        raise_api_error(answer["error"])


def raise_api_error(error: object) -> NoReturn:
    """Raise nats-py's exception for the ``error`` object of a JetStream API reply, whatever
    its shape (a reply without a ``code`` or with unknown fields must not raise a
    ``KeyError``/``TypeError`` instead). Map it with :func:`map_nats_errors`."""
    if type(error) is dict:
        nats.js.errors.APIError.from_error(
            {
                "code": error.get("code") or 0,
                "err_code": error.get("err_code"),
                "description": error.get("description"),
            }
        )
    raise nats.errors.Error(f"malformed JetStream error: {str(error)[:200]}")
