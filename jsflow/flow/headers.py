"""Header names the flow layer reads and writes."""

from __future__ import annotations

__all__ = [
    "CORRELATION_ID",
    "DELIVERY",
    "ERROR_MESSAGE",
    "ERROR_TYPE",
    "FAILED_AT",
    "MSG_ID",
    "HEADERS_DROPPED",
    "ORIGINAL_MSG_ID",
    "ORIGINAL_SEQUENCE",
    "ORIGINAL_SIZE",
    "ORIGINAL_STREAM",
    "ORIGINAL_SUBJECT",
    "STAGE",
    "TRUNCATED",
    "propagated",
]

MSG_ID = "Nats-Msg-Id"
CORRELATION_ID = "Jsflow-Correlation-Id"
ERROR_TYPE = "Jsflow-Error-Type"
ERROR_MESSAGE = "Jsflow-Error-Message"
STAGE = "Jsflow-Stage"
DELIVERY = "Jsflow-Delivery"
FAILED_AT = "Jsflow-Failed-At"
ORIGINAL_MSG_ID = "Jsflow-Original-Msg-Id"
ORIGINAL_SUBJECT = "Jsflow-Original-Subject"
ORIGINAL_STREAM = "Jsflow-Original-Stream"
ORIGINAL_SEQUENCE = "Jsflow-Original-Sequence"
ORIGINAL_SIZE = "Jsflow-Original-Size"  # body bytes of the original, set when truncated
TRUNCATED = "Jsflow-Truncated"  # "true": the dead letter's body is a prefix of the original
HEADERS_DROPPED = "Jsflow-Headers-Dropped"  # original headers left out to fit max_payload


def propagated(headers: dict[str, str] | None) -> dict[str, str]:
    """The headers of a source message worth carrying to what it causes.

    Server directives (``Nats-*``: dedupe id, expected sequences, TTLs, schedules) are
    dropped: they are about the original publish, not the new one.
    """
    if not headers:
        return {}
    return {k: v for k, v in headers.items() if not k.lower().startswith("nats-")}
