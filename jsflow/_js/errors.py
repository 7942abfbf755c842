"""nats-py's exceptions mapped into jsflow's tree, through one table of server codes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

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

__all__ = ["check_pub_ack", "map_nats_errors"]


@contextmanager
def map_nats_errors(
    *, bucket: str | None = None, key: str | None = None, subject: str | None = None
) -> Iterator[None]:
    """Translate nats-py exceptions raised in the block into the jsflow tree."""
    where = ", ".join(
        f"{name}={value!r}"
        for name, value in (("bucket", bucket), ("key", key), ("subject", subject))
        if value is not None
    )
    suffix = f" ({where})" if where else ""
    try:
        yield
    except JsflowError:
        raise
    except nats.js.errors.KeyWrongLastSequenceError as exc:
        raise ConflictError(bucket, key) from exc
    except nats.js.errors.BucketNotFoundError as exc:
        raise BucketError(f"bucket not found{suffix}") from exc
    except nats.js.errors.APIError as exc:
        if exc.err_code in WRONG_LAST_SEQUENCE:
            raise ConflictError(bucket, key) from exc
        if exc.err_code == MESSAGE_TOO_LARGE:
            raise PayloadTooLargeError(f"{exc.description}{suffix}") from exc
        raise ServerError(f"{exc.description or exc} (code {exc.err_code}){suffix}") from exc
    except nats.errors.MaxPayloadError as exc:
        raise PayloadTooLargeError(f"payload exceeds the server's max_payload{suffix}") from exc
    except (TimeoutError, nats.errors.TimeoutError) as exc:
        raise RequestTimeoutError(f"request timed out{suffix}") from exc
    except nats.errors.NoRespondersError as exc:
        raise ServerError(f"no responders: JetStream unavailable{suffix}") from exc
    except nats.js.errors.NoStreamResponseError as exc:
        raise NoStreamError(
            f"no stream answered{suffix}: none captures the subject (declare it first), or "
            "its stream has no leader yet (a failover: retry)"
        ) from exc
    except nats.errors.ConnectionClosedError as exc:
        raise ConnectionClosedError(f"the connection is closed{suffix}") from exc
    except (
        nats.errors.NoServersError,
        nats.errors.StaleConnectionError,
        nats.errors.ConnectionDrainingError,
        nats.errors.ConnectionReconnectingError,
        OSError,
    ) as exc:
        raise ConnectionFailedError(f"{type(exc).__name__}: {exc}{suffix}") from exc
    except nats.errors.Error as exc:
        raise ServerError(f"{type(exc).__name__}: {exc}{suffix}") from exc


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
        raise nats.js.errors.APIError.from_error(answer["error"])
