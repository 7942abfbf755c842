"""What jsflow needs of nats-py that nats-py keeps private: read or set here only, so an
upgrade of nats-py that moves them breaks one module, not the layers above."""

from __future__ import annotations

from typing import Any

from nats.js import JetStreamContext

__all__ = ["api_prefix", "consumer_name", "mark_seen"]

_DEFAULT_API_PREFIX = "$JS.API"


def api_prefix(js: JetStreamContext) -> str:
    """The JetStream API subject prefix ``js`` sends requests to (``$JS.API`` unless a
    domain or prefix was configured)."""
    return str(getattr(js, "_prefix", None) or _DEFAULT_API_PREFIX)


def consumer_name(sub: Any) -> str | None:
    """The name of the server-side consumer behind a JetStream subscription, if known."""
    return getattr(sub, "_consumer", None) or None


def mark_seen(sub: Any, seq: int) -> None:
    """Tell nats-py's ordered-consumer recovery of ``sub`` that stream sequence ``seq`` was
    seen, unless it saw something already, so that a recreated consumer resumes after it
    rather than replaying the stream from its start (nats-py has no API for it)."""
    jsi = getattr(getattr(sub, "_sub", None), "_jsi", None)
    if jsi is not None and getattr(jsi, "_sseq", None) == 0:
        jsi._sseq = seq
