"""Which KV keys are legal, and :func:`key`, which builds a legal key from any strings.

NATS KV keys are dot-separated tokens of ``A-Z a-z 0-9 - _ / =`` (``.`` separates tokens); no
token may be empty and wildcards (``*``, ``>``) are not keys. A key is at most
``MAX_KEY_LEN`` (1,024) characters: longer ones would push the protocol line past the
server's limit, and the server would close the connection. Checks run before any I/O.
"""

from __future__ import annotations

import re

from jsflow._validate import MAX_KEY_LEN
from jsflow.errors import InvalidKeyError

__all__ = ["key", "key_parts", "validate_key", "validate_pattern"]

_KEY_CHARS = re.compile(r"^[-/_=.a-zA-Z0-9]+\Z")
_PATTERN_CHARS = re.compile(r"^[-/_=.a-zA-Z0-9*>]+\Z")
# A whole legal key in one match (tokens of legal characters joined by single dots): the
# common case is answered by this alone; _reason says what is wrong with any other.
_LEGAL_KEY = re.compile(r"[-/_=a-zA-Z0-9]+(?:\.[-/_=a-zA-Z0-9]+)*")
# Characters key() passes through unchanged; everything else is escaped as =XX (UTF-8 bytes).
_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_/")
_EMPTY_PART = "="


def _reason(key: str, pattern: bool) -> str | None:
    if not isinstance(key, str):
        return f"keys are str, not {type(key).__name__}"
    if not key:
        return "key is empty"
    if len(key) > MAX_KEY_LEN:
        return f"longer than {MAX_KEY_LEN} characters ({len(key)}); hash long ids into a key"
    chars = _PATTERN_CHARS if pattern else _KEY_CHARS
    if not chars.match(key):
        bad = sorted({c for c in key if not chars.match(c)})
        if not pattern and any(c in "*>" for c in bad):
            return "wildcards ('*', '>') are not allowed in a key"
        hint = ""
        if ":" in bad and not pattern:  # a Redis-style key such as user:42
            parts = ", ".join(repr(p) for p in key.split(":")[:4])
            hint = f"; for Redis-style keys use jsflow.key({parts}) or '.' as the separator"
        elif not pattern:
            hint = "; jsflow.key(...) builds a legal key from any strings"
        return f"illegal character(s) {''.join(bad)!r} (allowed: A-Z a-z 0-9 - _ / = .){hint}"
    tokens = key.split(".")
    if any(not t for t in tokens):
        return "empty token (leading, trailing or doubled '.')"
    if pattern:
        for i, token in enumerate(tokens):
            if ("*" in token or ">" in token) and len(token) != 1:
                return f"wildcard must be a whole token, got {token!r}"
            if token == ">" and i != len(tokens) - 1:
                return "'>' must be the last token"
    return None


def validate_key(key: str) -> str:
    """Return ``key`` unchanged, or raise :class:`InvalidKeyError` saying what is wrong."""
    if type(key) is str and len(key) <= MAX_KEY_LEN and _LEGAL_KEY.fullmatch(key):
        return key
    reason = _reason(key, pattern=False)
    if reason is not None:
        raise InvalidKeyError(str(key), reason)
    return key


def validate_pattern(pattern: str) -> str:
    """Like :func:`validate_key` but also allows whole-token ``*`` and a final ``>``."""
    reason = _reason(pattern, pattern=True)
    if reason is not None:
        raise InvalidKeyError(str(pattern), reason)
    return pattern


def _escape(part: str) -> str:
    if not part:
        return _EMPTY_PART
    out = []
    for ch in part:
        if ch in _SAFE:
            out.append(ch)
        else:
            out.extend(f"={b:02X}" for b in ch.encode("utf-8"))
    return "".join(out)


def key(*parts: str) -> str:
    """Build a legal key from arbitrary strings, injectively (see :func:`key_parts`).

    Each part becomes one or more dot-free characters: ``A-Z a-z 0-9 - _ /`` stay as they
    are, any other character is written as ``=XX`` per UTF-8 byte, and an empty part is ``=``.
    Parts are joined with ``.``, so ``key("user", "a.b@x")`` is ``"user.a=2Eb=40x"``.
    """
    if not parts:
        raise InvalidKeyError("", "key() needs at least one part")
    for part in parts:
        if not isinstance(part, str):
            raise InvalidKeyError(repr(part), f"key parts are str, not {type(part).__name__}")
    result = ".".join(_escape(p) for p in parts)
    if len(result) > MAX_KEY_LEN:
        raise InvalidKeyError(
            result, f"key() result is longer than {MAX_KEY_LEN} characters; hash long parts"
        )
    return result


def key_parts(encoded: str) -> tuple[str, ...]:
    """Invert :func:`key`: return the parts that built ``encoded``."""
    validate_key(encoded)
    parts = []
    for token in encoded.split("."):
        if token == _EMPTY_PART:
            parts.append("")
            continue
        buf = bytearray()
        i = 0
        while i < len(token):
            ch = token[i]
            if ch == "=":
                hexpair = token[i + 1 : i + 3]
                if len(hexpair) != 2 or not all(c in "0123456789ABCDEF" for c in hexpair):
                    raise InvalidKeyError(encoded, f"bad escape at {token[i : i + 3]!r}")
                buf.append(int(hexpair, 16))
                i += 3
            else:
                buf.extend(ch.encode("ascii"))
                i += 1
        try:
            parts.append(buf.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise InvalidKeyError(encoded, "escapes are not valid UTF-8") from exc
    return tuple(parts)
