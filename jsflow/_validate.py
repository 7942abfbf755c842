"""The one place that says which names, ids and option values are legal.

Every bucket, stream, durable, subject, key and id jsflow sends is checked here before any
I/O, with a length bound: a name long enough to push a protocol line past the server's
``max_control_line`` (4 KiB by default) would make the server close the connection. Ids that
arrive from outside (message headers) go through :func:`id_key`, which keeps a legal id as it
is and hashes anything else into one, so no remote value is ever trusted as a name.

Option checks (:func:`duration`, :func:`count`, ...) raise :class:`ConfigError` naming the
parameter, never a bare ``TypeError``/``ValueError``/``OverflowError``.
"""

from __future__ import annotations

import hashlib
import math
import re
from typing import Any

from jsflow.errors import ConfigError, InvalidNameError

__all__ = [
    "MAX_DURATION",
    "MAX_KEY_LEN",
    "MAX_NAME_LEN",
    "MAX_SUBJECT_LEN",
    "check_id",
    "check_name",
    "check_subject",
    "count",
    "duration",
    "id_key",
    "number",
    "one_of",
    "optional_duration",
    "shorten",
]

MAX_NAME_LEN = 128  # buckets, streams, durables, app and task names
MAX_KEY_LEN = 1024  # KV keys, key() results and ids (task, schedule, correlation)
MAX_SUBJECT_LEN = 2048  # subjects given by users (sinks, dead letters, filters)
# Durations are sent as int64 nanoseconds (292 years); a century is past any real need.
MAX_DURATION = 100 * 365 * 86400.0

_NAME = re.compile(r"^[A-Za-z0-9_-]+\Z")
_ID = re.compile(r"^[-/_=.a-zA-Z0-9]+\Z")
_SUBJECT_TOKEN = re.compile(r"^[^\s.*>\x00-\x1f\x7f]+\Z")


def shorten(value: object, limit: int = 80) -> str:
    """``repr(value)`` cut to ``limit`` characters, for error messages about huge inputs."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 3]}... ({len(str(value))} chars)"


def _bounded_str(kind: str, value: object, max_len: int) -> str:
    if not isinstance(value, str):
        raise InvalidNameError(kind, value, f"must be a str, not {type(value).__name__}")
    if not value:
        raise InvalidNameError(kind, value, "must not be empty")
    if len(value) > max_len:
        raise InvalidNameError(kind, value, f"longer than {max_len} characters ({len(value)})")
    return value


def check_name(kind: str, value: object, *, max_len: int = MAX_NAME_LEN) -> str:
    """A stream, bucket, durable, app or task name: ``A-Z a-z 0-9 - _``, 1..``max_len`` chars."""
    value = _bounded_str(kind, value, max_len)
    if not _NAME.match(value):
        bad = "".join(sorted({c for c in value if not _NAME.match(c)}))[:20]
        raise InvalidNameError(kind, value, f"illegal character(s) {bad!r} (use A-Z a-z 0-9 - _)")
    return value


def check_id(kind: str, value: object, *, max_len: int = MAX_KEY_LEN) -> str:
    """An id that becomes part of a key or subject: ``A-Z a-z 0-9 - _ / = .`` without empty
    tokens, 1..``max_len`` chars (a task id, schedule id, correlation id)."""
    value = _bounded_str(kind, value, max_len)
    if not _ID.match(value):
        bad = "".join(sorted({c for c in value if not _ID.match(c)}))[:20]
        raise InvalidNameError(
            kind, value, f"illegal character(s) {bad!r} (use A-Z a-z 0-9 - _ / = .)"
        )
    if any(not token for token in value.split(".")):
        raise InvalidNameError(kind, value, "empty token (leading, trailing or doubled '.')")
    return value


def id_key(value: str, *, max_len: int = 200) -> str:
    """A legal key token for an id that came from outside (a header, a message id).

    A short id of plain characters (``A-Z a-z 0-9 - _``) is kept as it is, so keys stay
    readable; anything else (too long, dots, spaces, binary) becomes ``h-<sha256 hex>``,
    which is legal, bounded and still one-to-one in practice. Plain ids never start with
    ``h-`` followed by 64 hex digits by accident of this function, so the two cannot collide
    unless someone sends exactly such an id, which then names the same thing anyway.
    """
    if 0 < len(value) <= max_len and _NAME.match(value):
        return value
    digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()
    return f"h-{digest}"


def check_subject(
    kind: str, value: object, *, wildcards: bool = False, max_len: int = MAX_SUBJECT_LEN
) -> str:
    """A NATS subject: dot-separated tokens without whitespace or control characters;
    ``*`` and a final ``>`` as whole tokens only when ``wildcards``."""
    value = _bounded_str(kind, value, max_len)
    tokens = value.split(".")
    for i, token in enumerate(tokens):
        if token in ("*", ">"):
            if not wildcards:
                raise InvalidNameError(kind, value, "wildcards ('*', '>') are not allowed here")
            if token == ">" and i != len(tokens) - 1:
                raise InvalidNameError(kind, value, "'>' must be the last token")
            continue
        if not token:
            raise InvalidNameError(kind, value, "empty token (leading, trailing or doubled '.')")
        if not _SUBJECT_TOKEN.match(token):
            raise InvalidNameError(
                kind,
                value,
                f"token {token[:40]!r} has whitespace, a control character or a wildcard inside it",
            )
    return value


def number(
    name: str,
    value: object,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    exclusive_minimum: bool = False,
) -> float:
    """A finite real number (int or float, not bool) within bounds, as a float."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{name} must be a number, got {shorten(value)}")
    result = float(value) if not isinstance(value, float) else value
    if isinstance(value, int) and abs(value) > 2**63:
        raise ConfigError(f"{name} is out of range: {shorten(value)}")
    if not math.isfinite(result):
        raise ConfigError(f"{name} must be finite, got {value}")
    if minimum is not None:
        if exclusive_minimum and not result > minimum:
            raise ConfigError(f"{name} must be > {minimum:g}, got {value}")
        if not exclusive_minimum and result < minimum:
            raise ConfigError(f"{name} must be >= {minimum:g}, got {value}")
    if maximum is not None and result > maximum:
        raise ConfigError(f"{name} must be <= {maximum:g}, got {value}")
    return result


def duration(name: str, value: object, *, minimum: float = 0.0, positive: bool = True) -> float:
    """Seconds: a finite number, > 0 when ``positive`` (else >= ``minimum``), at most a century."""
    return number(
        name,
        value,
        minimum=minimum,
        maximum=MAX_DURATION,
        exclusive_minimum=positive and minimum == 0.0,
    )


def optional_duration(name: str, value: object, *, positive: bool = True) -> float | None:
    """:func:`duration`, or ``None`` passed through."""
    return None if value is None else duration(name, value, positive=positive)


def count(name: str, value: object, *, minimum: int = 1, maximum: int | None = None) -> int:
    """An int (not bool, not float) in ``minimum..maximum``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name} must be an int, got {shorten(value)}")
    if value < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{name} must be <= {maximum}, got {value}")
    return value


def one_of(name: str, value: Any, types: type | tuple[type, ...]) -> Any:
    """``value`` when it is an instance of ``types``, else :class:`ConfigError`."""
    if not isinstance(value, types):
        expected = (
            " or ".join(t.__name__ for t in types) if isinstance(types, tuple) else types.__name__
        )
        raise ConfigError(f"{name} must be {expected}, got {shorten(value)}")
    return value
