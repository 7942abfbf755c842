"""What goes on and comes off the wire for one entry.

The headers of a write (expected revision, ``Nats-TTL``, delete and purge markers), the
:class:`Op` a message's headers stand for, the one hand parser of the server's JSON
replies, and the two requests on one entry: a direct get and a publish that returns the
revision the server stored.
"""

from __future__ import annotations

import json
from typing import Any

from jsflow._js import js_errors, map_nats_errors, nats_errors
from jsflow._js.codes import WRONG_LAST_SEQUENCE
from jsflow._js.headers import (
    EXPECTED_LAST_SUBJECT_SEQUENCE,
    MARKER_REASON,
    ROLLUP,
    TTL,
    ttl_value,
)
from jsflow._validate import duration
from jsflow.errors import ConflictError, ServerError
from jsflow.store.bucket import Bucket
from jsflow.store.values import MIN_TTL, Op, Raw

__all__ = [
    "DELETE",
    "KV_OPERATION",
    "PURGE",
    "api_reply",
    "op_of",
    "publish",
    "read",
    "ttl_header",
]

KV_OPERATION = "KV-Operation"
DELETE = {KV_OPERATION: "DEL"}
"""The headers of a delete marker."""
PURGE = {KV_OPERATION: "PURGE", ROLLUP: "sub"}
"""The headers of a purge: a marker that rolls up (removes) every earlier revision."""

_json_decode = json.JSONDecoder().decode
_ttl_headers: dict[float, str] = {}


def ttl_header(ttl: object) -> str:
    """The ``Nats-TTL`` header of a per-key ``ttl`` (validated; :class:`ConfigError` if bad).

    Always :func:`jsflow._js.headers.ttl_value`: whole seconds, rounded up, because the server
    keeps whole seconds and a writer counting on ``ttl`` must not see the key expire sooner.
    """
    if type(ttl) is float or type(ttl) is int:  # the hot path: a ttl seen before
        header = _ttl_headers.get(ttl)
        if header is not None:
            return header
    seconds = duration("ttl", ttl, minimum=MIN_TTL, positive=False)
    header = ttl_value(seconds)
    if len(_ttl_headers) < 256:
        _ttl_headers[seconds] = header
    return header


def op_of(headers: dict[str, str] | None) -> Op:
    """What a message of the bucket did to its key, from its headers (none: a put)."""
    if not headers:
        return Op.PUT
    op = headers.get(KV_OPERATION)
    if op == "DEL":
        return Op.DELETE
    if op == "PURGE":
        return Op.PURGE
    reason = headers.get(MARKER_REASON)
    if reason in ("MaxAge", "Purge"):
        return Op.PURGE
    if reason == "Remove":
        return Op.DELETE
    return Op.PUT


def api_reply(
    data: bytes,
    *,
    bucket: str,
    key: str | None = None,
    subject: str | None = None,
    revision: int | None = None,
) -> dict[str, Any] | None:
    """The JSON object the server replied to a JetStream request; ``None`` when the reply is
    not one (the caller says what it expected).

    An error reply raises, mapped into jsflow's tree: a wrong last sequence is a
    :class:`ConflictError` on ``key`` at ``revision`` (the revision the write expected).
    """
    try:
        reply = _json_decode(data.decode())
    except ValueError:
        return None
    if type(reply) is not dict:
        return None
    error = reply.get("error")
    if error is None:
        return reply
    if type(error) is dict:
        if error.get("err_code") in WRONG_LAST_SEQUENCE:
            raise ConflictError(bucket, key or None, revision=revision)
        with map_nats_errors(bucket=bucket, key=key, subject=subject):
            js_errors.APIError.from_error({"code": 0, **error})
    return None


async def read(bucket: Bucket, key: str) -> Raw:
    """The latest entry of ``key`` by direct get (revision 0, no data: never written)."""
    with map_nats_errors(bucket=bucket.name, key=key):
        try:
            msg = await bucket.connection.js.get_msg(
                bucket.stream, subject=bucket.subject(key), direct=bucket.direct_reads
            )
        except js_errors.NotFoundError:
            return Raw(0, None)
    op = op_of(msg.headers)
    return Raw(int(msg.seq or 0), (msg.data or b"") if op is Op.PUT else None)


async def read_revision(bucket: Bucket, key: str, revision: int) -> Raw | None:
    """``key``'s entry at ``revision`` (``None``: no such revision of this key retained;
    ``data is None``: that revision is a delete)."""
    with map_nats_errors(bucket=bucket.name, key=key):
        try:
            msg = await bucket.connection.js.get_msg(
                bucket.stream, seq=revision, direct=bucket.direct_reads
            )
        except js_errors.NotFoundError:
            return None
    if msg.subject != bucket.subject(key):
        return None  # that sequence is another key's write
    op = op_of(msg.headers)
    return Raw(int(msg.seq or revision), (msg.data or b"") if op is Op.PUT else None)


async def publish(
    bucket: Bucket,
    key: str,
    data: bytes,
    *,
    expected: int | None = None,
    ttl: float | None = None,
    headers: dict[str, str] | None = None,
) -> int:
    """Publish to ``key``'s subject and return the stream sequence the server stored.

    ``expected``: only if that is still the key's latest revision (0: absent), else
    :class:`ConflictError`. A JetStream publish is a request whose reply is the JSON ack;
    this sends it with ``nc.request`` and reads ``seq`` itself (what ``js.publish`` does,
    minus building a ``PubAck``), and maps nats-py errors only when one was raised, so the
    common path enters no context manager.
    """
    hdrs = dict(headers) if headers else {}
    if expected is not None:
        hdrs[EXPECTED_LAST_SUBJECT_SEQUENCE] = str(expected)
    if ttl is not None:
        hdrs[TTL] = ttl_header(ttl)
    client = bucket.connection
    try:
        msg = await client.nc.request(
            bucket.subject(key), data, timeout=client.timeout, headers=hdrs or None
        )
    except Exception as exc:
        if isinstance(exc, nats_errors.NoRespondersError):
            exc = js_errors.NoStreamResponseError()
        with map_nats_errors(bucket=bucket.name, key=key):
            raise exc from None
        raise  # pragma: no cover - map_nats_errors always raises
    reply = api_reply(msg.data, bucket=bucket.name, key=key, revision=expected)
    if reply is not None and "seq" in reply:
        return int(reply["seq"])
    raise ServerError(
        f"unexpected reply to a publish: {msg.data[:200]!r} (bucket={bucket.name!r}, key={key!r})"
    )
