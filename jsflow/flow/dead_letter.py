"""Publishing a failed message to a dead-letter subject: original body and headers, plus why.

Used by :class:`FlowHandler` and by the tasks layer's EventRouter, so every dead letter in
jsflow carries the same headers.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from jsflow._js import map_nats_errors
from jsflow.flow import headers as h

if TYPE_CHECKING:
    from jsflow.client import Client

__all__ = ["publish_dead_letter"]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


async def publish_dead_letter(
    client: Client,
    dead_letter: str,
    *,
    data: bytes,
    headers: dict[str, str] | None,
    subject: str,
    error: BaseException,
    delivery: int,
    dedupe_id: str,
    stage: str | None = None,
) -> None:
    """Publish ``data`` to ``dead_letter`` with the source's headers and the error's.

    Server directives of the source (``Nats-*``) are dropped; its ``Nats-Msg-Id`` is kept as
    ``Jsflow-Original-Msg-Id`` and ``dedupe_id`` becomes the dead letter's own, so a
    redelivered failure is dead-lettered once. Raises a :class:`jsflow.JsflowError` when the
    publish is not acknowledged.
    """
    out = h.propagated(headers)
    if headers and h.MSG_ID in headers:
        out[h.ORIGINAL_MSG_ID] = headers[h.MSG_ID]
    out.update(
        {
            h.ERROR_TYPE: type(error).__name__,
            h.ERROR_MESSAGE: str(error)[:1000],
            h.DELIVERY: str(delivery),
            h.FAILED_AT: _now(),
            h.ORIGINAL_SUBJECT: subject,
            h.MSG_ID: dedupe_id,
        }
    )
    if stage is not None:
        out[h.STAGE] = stage
    with map_nats_errors(subject=dead_letter):
        await client.js.publish(dead_letter, data, headers=out)
