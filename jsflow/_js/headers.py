"""Names of the server's message headers (the ``Nats-*`` directives) jsflow sends or reads."""

from __future__ import annotations

__all__ = [
    "BATCH_COMMIT",
    "BATCH_ID",
    "BATCH_SEQUENCE",
    "DESCRIPTION",
    "EXPECTED_LAST_SUBJECT_SEQUENCE",
    "INCR",
    "MARKER_REASON",
    "MSG_ID",
    "ROLLUP",
    "SCHEDULE",
    "SCHEDULE_TARGET",
    "SCHEDULE_TTL",
    "STATUS",
    "TTL",
    "ttl_value",
]

import math

MSG_ID = "Nats-Msg-Id"
TTL = "Nats-TTL"
MARKER_REASON = "Nats-Marker-Reason"
EXPECTED_LAST_SUBJECT_SEQUENCE = "Nats-Expected-Last-Subject-Sequence"
ROLLUP = "Nats-Rollup"
INCR = "Nats-Incr"
BATCH_ID = "Nats-Batch-Id"
BATCH_SEQUENCE = "Nats-Batch-Sequence"
BATCH_COMMIT = "Nats-Batch-Commit"
SCHEDULE = "Nats-Schedule"
SCHEDULE_TARGET = "Nats-Schedule-Target"
SCHEDULE_TTL = "Nats-Schedule-TTL"
STATUS = "Status"  # status line of a server-generated message (404, 408, 100, ...)
DESCRIPTION = "Description"


def ttl_value(seconds: float) -> str:
    """The ``Nats-TTL`` value for ``seconds``, rounded UP to whole seconds.

    The server keeps per-message TTLs in whole seconds, truncating (``1500ms`` lives like
    ``1s``); rounding up here means nothing jsflow writes expires before the time its
    writer counts on (a lease holder never believes it holds a lease the server has freed).
    """
    return f"{max(1, math.ceil(seconds - 1e-9))}s"
