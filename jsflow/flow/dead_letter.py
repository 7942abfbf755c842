"""Dead letters: where a message that cannot be processed goes, with the original and why.

:class:`DeadLetter` is used through :class:`jsflow.flow.consume.SettlePolicy` by
:class:`FlowHandler` and by the tasks layer's EventRouter, so every dead letter in jsflow
carries the same headers and obeys the same limits.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import jsflow.flow.headers as h
from jsflow._js import Msg, map_nats_errors
from jsflow._js.guard import headers_size
from jsflow._validate import check_name, check_subject
from jsflow.connection import check_replicas
from jsflow.errors import ConfigError
from jsflow.flow.streams import ensure_stream, stream_capturing, subject_matches

if TYPE_CHECKING:
    from jsflow.client import Client

__all__ = ["MAX_HEADER_VALUE", "DeadLetter", "header_value"]

MAX_HEADER_VALUE = 1024  # bytes of one Jsflow-* header value (error messages, stage names)
_SLACK = 64  # bytes kept free below max_payload, for what the client may add


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def header_value(text: str, limit: int = MAX_HEADER_VALUE) -> str:
    """``text`` as a safe header value: one line (control characters become spaces), at
    most ``limit`` UTF-8 bytes (a CR or LF inside a value would break the message framing)."""
    if not text.isprintable():
        text = "".join(c if c.isprintable() else " " for c in text)
    raw = text.encode("utf-8", "replace")
    if len(raw) <= limit:
        return text
    return raw[: limit - 3].decode("utf-8", "ignore") + "..."


class DeadLetter:
    """A dead-letter subject (literal, validated), and optionally the stream to create for it.

    :meth:`open` makes sure a stream captures the subject (creating ``stream`` when named),
    else raises :class:`ConfigError`: a dead letter nothing stores would make every failing
    message retry until the server gives up on it. :meth:`check_not_consumed` rejects a
    subject that the consumer feeding it reads itself (each dead letter would be consumed,
    fail and be dead-lettered again, forever). ``replicas`` (1-5, default the client's)
    applies when ``stream`` is created.
    """

    def __init__(self, subject: object, stream: object = None, replicas: object = None) -> None:
        self.subject = check_subject("dead_letter", subject)
        self.stream = None if stream is None else check_name("dead_letter_stream", stream)
        self.replicas = None if replicas is None else check_replicas(replicas)

    def check_not_consumed(self, patterns: Iterable[str], what: str) -> None:
        """:class:`ConfigError` when one of ``patterns`` (what ``what`` reads) matches it."""
        for pattern in patterns:
            if subject_matches(pattern, self.subject):
                raise ConfigError(
                    f"dead_letter {self.subject!r} is read by {what} ({pattern!r}): every dead "
                    "letter would come back to it; use a subject outside its filter"
                )

    async def open(self, client: Client) -> None:
        """Create ``stream`` when named and absent; check that a stream captures the subject."""
        if self.stream is not None:
            await ensure_stream(client, self.stream, [self.subject], replicas=self.replicas)
        if await stream_capturing(client, self.subject) is None:
            where = (
                f"stream {self.stream!r} exists without it"
                if self.stream is not None
                else "name dead_letter_stream to create one"
            )
            raise ConfigError(
                f"no stream captures the dead_letter subject {self.subject!r} ({where})"
            )

    def message(
        self,
        msg: Msg,
        *,
        error: BaseException,
        delivery: int,
        dedupe_id: str,
        stage: str | None,
        max_payload: int,
    ) -> tuple[bytes, dict[str, str]]:
        """The dead letter's body and headers for ``msg``, fitting in ``max_payload`` bytes.

        The source's headers are kept except server directives (``Nats-*``); its
        ``Nats-Msg-Id`` becomes ``Jsflow-Original-Msg-Id`` and ``dedupe_id`` the dead
        letter's own. When body and headers do not fit, the original headers are dropped
        first if they alone are too many (``Jsflow-Headers-Dropped``), then the body is
        cut (``Jsflow-Truncated: true``, ``Jsflow-Original-Size``); the original stays in
        its stream at ``Jsflow-Original-Stream`` / ``Jsflow-Original-Sequence``.
        """
        source = msg.headers
        ours: dict[str, str] = {}
        if source and h.MSG_ID in source:
            ours[h.ORIGINAL_MSG_ID] = header_value(source[h.MSG_ID])
        ours.update(
            {
                h.ERROR_TYPE: header_value(type(error).__name__, 200),
                h.ERROR_MESSAGE: header_value(str(error)),
                h.DELIVERY: str(delivery),
                h.FAILED_AT: _now(),
                h.ORIGINAL_SUBJECT: header_value(msg.subject),
                h.MSG_ID: dedupe_id,
            }
        )
        try:
            meta = msg.metadata
        except Exception:  # not a JetStream delivery: no stream position to point to
            meta = None
        if meta is not None:
            ours[h.ORIGINAL_STREAM] = str(meta.stream)
            ours[h.ORIGINAL_SEQUENCE] = str(meta.sequence.stream)
        if stage is not None:
            ours[h.STAGE] = header_value(stage, 256)
        out = {**h.propagated(source), **ours}
        data = msg.data or b""
        room = max_payload - _SLACK
        if len(data) + headers_size(out) <= room:
            return data, out
        marks = {h.TRUNCATED: "true", h.ORIGINAL_SIZE: str(len(data))}
        out.update(marks)
        if headers_size(out) > room // 2:  # the original headers are the problem
            kept = len(out) - len(ours) - len(marks)
            out = {**ours, **marks, h.HEADERS_DROPPED: str(kept)}
        cut = max(0, room - headers_size(out))
        if cut >= len(data):
            del out[h.TRUNCATED], out[h.ORIGINAL_SIZE]
            return data, out
        return data[:cut], out

    async def publish(
        self,
        client: Client,
        msg: Msg,
        *,
        error: BaseException,
        delivery: int,
        dedupe_id: str,
        stage: str | None = None,
    ) -> None:
        """Publish the dead letter of ``msg`` (see :meth:`message`), awaiting its PubAck.

        Raises a :class:`jsflow.JsflowError` when the publish is not acknowledged.
        """
        data, headers = self.message(
            msg,
            error=error,
            delivery=delivery,
            dedupe_id=dedupe_id,
            stage=stage,
            max_payload=int(client.nc.max_payload),
        )
        with map_nats_errors(subject=self.subject):
            await client.js.publish(self.subject, data, headers=headers)

    def __repr__(self) -> str:
        return f"DeadLetter({self.subject!r}, stream={self.stream!r})"
