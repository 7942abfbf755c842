"""Named JetStream API error codes (``err_code`` in the server's replies), in one place."""

from __future__ import annotations

__all__ = [
    "BATCH_DUPLICATE_MSG",
    "CONSUMER_NOT_FOUND",
    "MAX_CONSUMERS",
    "MESSAGE_TOO_LARGE",
    "REPLICAS_UNAVAILABLE",
    "STREAM_NAME_IN_USE",
    "STREAM_NOT_FOUND",
    "WRONG_LAST_SEQUENCE",
]

STREAM_NAME_IN_USE = 10058  # a stream with this name exists with another config
STREAM_NOT_FOUND = 10059
CONSUMER_NOT_FOUND = 10014
MAX_CONSUMERS = 10026  # "maximum consumers limit reached"
MESSAGE_TOO_LARGE = 10054  # message size exceeds maximum allowed
# wrong last sequence: per stream (10071) and per subject (10164)
WRONG_LAST_SEQUENCE = (10071, 10164)
BATCH_DUPLICATE_MSG = 10201  # an atomic batch carried a Nats-Msg-Id the stream already has
# More replicas than the servers can place: "replicas > 1 not supported in non-clustered
# mode" (10074) and "insufficient resources" (10023).
REPLICAS_UNAVAILABLE = (10074, 10023)
