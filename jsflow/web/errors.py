"""The gateway's errors and the one table mapping jsflow's exceptions to HTTP statuses.

Every error answer has the body ``{"error": {"type": "...", "message": "..."}}``: ``type``
is the exception's class name (``TaskNotFoundError``, ``InvalidArgumentsError``, ...), so a
client can tell causes apart without parsing messages.
"""

from __future__ import annotations

from typing import Any

from jsflow.errors import (
    CodecError,
    ConfigError,
    ConflictError,
    ConnectionFailedError,
    ControlLineTooLongError,
    DeadLetterNotFoundError,
    InvalidKeyError,
    InvalidNameError,
    JsflowError,
    NotReplayableError,
    PayloadTooLargeError,
    RequestTimeoutError,
    ServerError,
    TaskNotFoundError,
)

__all__ = [
    "STATUS",
    "AmbiguousTaskError",
    "BadRequestError",
    "DeadLetterNotFoundError",
    "GatewayError",
    "InvalidArgumentsError",
    "NotReplayableError",
    "UnknownAppError",
    "UnknownTaskError",
    "error_body",
    "status_for",
]


class GatewayError(JsflowError):
    """Family of errors the HTTP gateway answers with (a request it cannot carry out)."""


class BadRequestError(GatewayError):
    """The request body is not JSON, or not the JSON object the endpoint expects."""


class InvalidArgumentsError(GatewayError, ConfigError):
    """A submit's arguments do not fit the task's signature (checked before any I/O)."""


class UnknownTaskError(GatewayError, LookupError):
    """No app of the gateway defines a task of that name."""


class UnknownAppError(GatewayError, LookupError):
    """The gateway serves no app of that name (``?app=``)."""


class AmbiguousTaskError(GatewayError, ConfigError):
    """Several apps of the gateway define a task of that name: ``?app=`` picks one."""


# The one mapping: the first class of an exception's MRO found here gives its status.
STATUS: dict[type[BaseException], int] = {
    BadRequestError: 400,
    TaskNotFoundError: 404,
    UnknownTaskError: 404,
    UnknownAppError: 404,
    DeadLetterNotFoundError: 404,
    NotReplayableError: 409,
    ConflictError: 409,
    PayloadTooLargeError: 413,
    InvalidArgumentsError: 422,
    AmbiguousTaskError: 422,
    InvalidKeyError: 422,
    InvalidNameError: 422,
    ControlLineTooLongError: 422,
    CodecError: 422,
    ConfigError: 422,
    ServerError: 502,
    ConnectionFailedError: 503,
    RequestTimeoutError: 504,
    JsflowError: 500,
}


def status_for(exc: BaseException) -> int:
    """The HTTP status of ``exc`` (500 for anything not in :data:`STATUS`)."""
    for cls in type(exc).__mro__:
        status = STATUS.get(cls)
        if status is not None:
            return status
    return 500


def error_body(exc_type: str, message: str) -> dict[str, Any]:
    """The JSON error body ``{"error": {"type": ..., "message": ...}}``."""
    return {"error": {"type": exc_type, "message": message}}
