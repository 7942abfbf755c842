"""Reading many entries of a bucket at once: its live keys, from a snapshot of its subjects
(paged ``STREAM.INFO``) and a headers-only scan, the current value of every key in one
pass, and short-lived ordered scans (history).

Each function takes one key pattern or several (validated, none covering another: see
:func:`jsflow.store.wire.filters`); several are read by one consumer all the same."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from jsflow._js import Msg, api, internals, map_nats_errors
from jsflow.errors import ServerError
from jsflow.store.bucket import Bucket
from jsflow.store.values import Op
from jsflow.store.wire import api_reply, describe, op_of, ordered_consumer

__all__ = ["keys", "latest", "scan", "subjects"]

_PAGE_OVERLAP = 1000  # subjects a page of a paged subject listing re-reads of the last one


async def keys(bucket: Bucket, filter: Sequence[str]) -> list[str]:
    """The keys matching the (validated) ``filter`` whose latest entry is not a delete,
    sorted: see :meth:`ObjectStore.keys`. Several patterns: the subjects of each, then one
    scan of all."""
    subjects_now: set[str] = set()
    last_seq = 0
    for pattern in filter:
        found, seq = await subjects(bucket, bucket.subject(pattern))
        subjects_now |= found
        last_seq = max(last_seq, seq)
    if not subjects_now:
        return []
    deleted: set[str] = set()
    for msg in await scan(
        bucket, filter, api.DeliverPolicy.LAST_PER_SUBJECT, headers_only=True, until=last_seq
    ):
        if op_of(msg.headers) is Op.PUT:
            deleted.discard(msg.subject)
        else:
            deleted.add(msg.subject)
    return sorted(bucket.key_of(s) for s in subjects_now if s not in deleted)


async def latest(bucket: Bucket, filter: Sequence[str]) -> list[Msg]:
    """The last message of every key matching the (validated) ``filter`` that holds a
    value (deletes, purges and expiry markers left out), in stream order: one pass of one
    short-lived ordered consumer (``LAST_PER_SUBJECT``), however many keys there are."""
    msgs = await scan(bucket, filter, api.DeliverPolicy.LAST_PER_SUBJECT)
    return [m for m in msgs if op_of(m.headers) is Op.PUT]


async def subjects(bucket: Bucket, subject: str) -> tuple[set[str], int]:
    """The subjects matching ``subject`` that hold messages, and the stream's last
    sequence then, from ``STREAM.INFO`` with ``subjects_filter``.

    The server answers each page (up to 100,000 subjects, sorted) from one snapshot.
    Pages of a large result come from successive snapshots, so the next page is asked
    for with an overlap; when writes in between shifted it past the last subject seen,
    the overlap grows until the page starts at or before it, so nothing is skipped.
    """
    client = bucket.connection
    request_subject = f"{internals.api_prefix(client.js)}.STREAM.INFO.{bucket.stream}"
    found: set[str] = set()
    last_seq = 0
    offset = 0
    previous_last: str | None = None
    back = _PAGE_OVERLAP
    while True:
        request = json.dumps({"subjects_filter": subject, "offset": offset}).encode()
        with map_nats_errors(bucket=bucket.name, subject=subject):
            reply = await client.nc.request(request_subject, request, timeout=client.timeout)
        info = api_reply(reply.data, bucket=bucket.name, subject=subject)
        if info is None:
            raise ServerError(f"unreadable stream info for bucket {bucket.name!r}")
        state = info.get("state") or {}
        page = sorted((state.get("subjects") or {}).keys())
        if previous_last is not None and page and page[0] > previous_last and offset > 0:
            offset = max(0, offset - back)  # shifted past what we saw: look further back
            back *= 2
            continue
        found.update(page)
        last_seq = max(last_seq, int(state.get("last_seq") or 0))
        total = int(info.get("total") or 0)
        end = int(info.get("offset") or 0) + len(page)
        if not page or end >= total:
            return found, last_seq
        previous_last = page[-1]
        back = _PAGE_OVERLAP
        offset = max(0, end - back)


async def scan(
    bucket: Bucket,
    patterns: Sequence[str],
    policy: api.DeliverPolicy,
    *,
    headers_only: bool = False,
    until: int | None = None,
) -> list[Msg]:
    """Read what matches ``patterns`` up to now (or up to stream sequence ``until``) through
    a short-lived ordered consumer."""
    wanted = [bucket.subject(p) for p in patterns]
    client = bucket.connection
    msgs: list[Msg] = []
    sub = await ordered_consumer(
        bucket, wanted, policy, headers_only=headers_only, inactive_threshold=30.0
    )
    with map_nats_errors(bucket=bucket.name, subject=describe(wanted)):
        try:
            info = await sub.consumer_info()
            # Nothing to read only if the server has nothing pending *and* delivered
            # nothing yet: messages it already pushed may still be in flight to us.
            delivered = info.delivered.consumer_seq if info.delivered else 0
            if info.num_pending == 0 and not delivered:
                return msgs
            while True:
                msg = await sub.next_msg(timeout=client.timeout)
                msgs.append(msg)
                if msg.metadata.num_pending == 0:
                    return msgs
                if until is not None and msg.metadata.sequence.stream >= until:
                    return msgs
        finally:
            await bucket.close_subscription(sub)


async def stream_info(bucket: Bucket) -> dict[str, Any]:
    """The bucket stream's ``STREAM.INFO`` reply as the server sent it (nats-py's parsed
    one drops ``num_subjects``): ``config`` and ``state``."""
    client = bucket.connection
    request_subject = f"{internals.api_prefix(client.js)}.STREAM.INFO.{bucket.stream}"
    with map_nats_errors(bucket=bucket.name):
        reply = await client.nc.request(request_subject, b"", timeout=client.timeout)
    info = api_reply(reply.data, bucket=bucket.name)
    if info is None:
        raise ServerError(f"unreadable stream info for bucket {bucket.name!r}")
    return info
