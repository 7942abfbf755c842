"""What goes on and comes off the wire for one entry, and the store's consumers.

The headers of a write (expected revision, ``Nats-TTL``, delete and purge markers), the
:class:`Op` a message's headers stand for, the one hand parser of the server's JSON
replies, the requests on one entry (a direct get, a publish that returns the revision the
server stored, a purge of its older messages), the key filters a consumer takes
(:func:`filters`) and :func:`ordered_consumer`, the one place the store creates its
(ordered, ephemeral) consumers.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

from jsflow._js import (
    Msg,
    api,
    internals,
    js_errors,
    map_nats_errors,
    nats_errors,
    raise_api_error,
)
from jsflow._js.codes import WRONG_LAST_SEQUENCE
from jsflow._js.headers import (
    EXPECTED_LAST_SUBJECT_SEQUENCE,
    MARKER_REASON,
    ROLLUP,
    TTL,
    ttl_value,
)
from jsflow._validate import duration, shorten
from jsflow.errors import ConfigError, ConflictError, ServerError
from jsflow.keys import validate_pattern
from jsflow.store.bucket import Bucket
from jsflow.store.values import MIN_TTL, Op, Raw

__all__ = [
    "DELETE",
    "KV_OPERATION",
    "MAX_FILTERS",
    "PURGE",
    "api_reply",
    "describe",
    "filters",
    "op_of",
    "ordered_consumer",
    "publish",
    "purge_before",
    "read",
    "ttl_header",
]

KV_OPERATION = "KV-Operation"
DELETE = {KV_OPERATION: "DEL"}
"""The headers of a delete marker."""
PURGE = {KV_OPERATION: "PURGE", ROLLUP: "sub"}
"""The headers of a purge: a marker that rolls up (removes) every earlier revision."""

MAX_FILTERS = 1000
"""The most key patterns one filter argument may list (they travel in one consumer request)."""

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
            raise_api_error(error)
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


async def purge_before(bucket: Bucket, key: str, revision: int) -> int:
    """Remove ``key``'s messages below stream sequence ``revision`` and return how many the
    server removed (a stream purge with a subject filter, not a marker: nothing is written).

    Bounded by a sequence rather than "keep the last n", so a write made meanwhile stays.
    """
    client = bucket.connection
    request_subject = f"{internals.api_prefix(client.js)}.STREAM.PURGE.{bucket.stream}"
    request = json.dumps({"filter": bucket.subject(key), "seq": revision}).encode()
    with map_nats_errors(bucket=bucket.name, key=key):
        reply = await client.nc.request(request_subject, request, timeout=client.timeout)
    answer = api_reply(reply.data, bucket=bucket.name, key=key)
    if answer is None or not answer.get("success"):
        raise ServerError(
            f"unexpected reply to a purge: {reply.data[:200]!r} "
            f"(bucket={bucket.name!r}, key={key!r})"
        )
    return int(answer.get("purged") or 0)


def filters(value: object, *, name: str = "filter") -> tuple[str, ...]:
    """The key patterns of a filter argument: one pattern, or an iterable of them.

    Every pattern is validated before any I/O (:class:`InvalidKeyError` naming it); a list
    must hold 1..:data:`MAX_FILTERS` of them (:class:`ConfigError`). Duplicates, and
    patterns another one covers (``a.b`` or ``a.*`` beside ``a.>``), are dropped, in
    first-seen order: the keys they match together stay the same, and the server refuses a
    consumer whose filter subjects include one another. Patterns that overlap without one
    covering the other (``a.*`` and ``*.a``) stay: the server delivers a message matching
    both once (a recent nats-server does; older ones refuse such a consumer, code 10138).
    """
    if isinstance(value, str):
        return (validate_pattern(value),)
    if isinstance(value, bytes | bytearray) or not isinstance(value, Iterable):
        raise ConfigError(f"{name} must be a key pattern or a list of them, got {shorten(value)}")
    patterns: list[str] = []
    for item in value:
        if len(patterns) == MAX_FILTERS:
            raise ConfigError(f"{name} lists more than {MAX_FILTERS} key patterns")
        patterns.append(validate_pattern(item))
    if not patterns:
        raise ConfigError(f"{name} is an empty list: give at least one key pattern ('>': all)")
    unique = list(dict.fromkeys(patterns))
    if len(unique) == 1:
        return (unique[0],)
    tokens = {p: p.split(".") for p in unique}
    # Only a wildcard pattern covers another one: distinct keys never do.
    wild = [p for p in unique if "*" in tokens[p] or tokens[p][-1] == ">"]
    return tuple(
        p for p in unique if not any(q != p and _covers(tokens[q], tokens[p]) for q in wild)
    )


def _covers(a: list[str], b: list[str]) -> bool:
    """Whether pattern ``a`` matches every subject pattern ``b`` matches (both as tokens)."""
    for i, token in enumerate(a):
        if token == ">":
            return len(b) > i
        if i >= len(b) or b[i] == ">" or (token != "*" and token != b[i]):
            return False
    return len(a) == len(b)


def describe(subjects: Sequence[str]) -> str:
    """``subjects`` for an error message or log line (the first, and how many more)."""
    return subjects[0] if len(subjects) == 1 else f"{subjects[0]} (+{len(subjects) - 1} more)"


async def ordered_consumer(
    bucket: Bucket,
    subjects: Sequence[str],
    policy: api.DeliverPolicy,
    *,
    cb: Callable[[Msg], Awaitable[None]] | None = None,
    start_seq: int | None = None,
    headers_only: bool = False,
    idle_heartbeat: float | None = None,
    inactive_threshold: float,
) -> Any:
    """Create an ordered, ephemeral push consumer of ``bucket`` on ``subjects`` and subscribe
    to it (``cb``, or ``next_msg`` when ``None``): the one way the store makes a consumer.

    One subject is its filter subject; several (none covering another: :func:`filters`) go
    in the server's multi-subject filter (``filter_subjects``, nats-server 2.10+), which
    nats-py keeps when it re-creates the consumer after a gap. With ``start_seq`` it starts there
    (``BY_START_SEQUENCE``), and nats-py is told that the sequence before it was seen, so
    that its own recovery (after two missed heartbeats) resumes from there rather than
    replaying the stream from its first message.
    """
    config = api.ConsumerConfig(
        deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE if start_seq else policy,
        opt_start_seq=start_seq,
        headers_only=headers_only or None,
        inactive_threshold=inactive_threshold,
        filter_subjects=list(subjects) if len(subjects) > 1 else None,
    )
    with map_nats_errors(bucket=bucket.name, subject=describe(subjects)):
        sub = await bucket.connection.js.subscribe(
            subjects[0],
            stream=bucket.stream,
            cb=cb,
            ordered_consumer=True,
            idle_heartbeat=idle_heartbeat,
            config=config,
        )
    if start_seq:
        internals.mark_seen(sub, start_seq - 1)
    return sub
