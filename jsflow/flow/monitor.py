"""Flows seen from outside: the streams (and their consumers' lag), and the dead letters of
flows and routers, listed by sequence, inspected and replayed (the gateway's ``/flows`` and
``jsflow dlq`` read them through :class:`FlowMonitor`).

A dead letter (see :class:`jsflow.flow.dead_letter.DeadLetter`) carries the original's
headers and the ``Jsflow-*`` headers saying why and where it came from. Replay republishes
its body to ``Jsflow-Original-Subject`` with the original's headers (the dead-letter ones
and server directives left out), under a dedupe id of its own so a double click replays it
once; the dead letter is then removed unless kept. A truncated dead letter is replayed from
the original still in its stream, or refused.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import jsflow.flow.headers as h
from jsflow._js import api, codes, js_errors, map_nats_errors
from jsflow._validate import check_name, check_subject
from jsflow.errors import DeadLetterNotFoundError, NotReplayableError

if TYPE_CHECKING:
    from jsflow.client import Client

__all__ = ["DeadLetterMessage", "FlowMonitor"]

# Headers a dead letter adds to the original's: not carried back by a replay.
_DEAD_LETTER_HEADERS = frozenset(
    {
        h.ERROR_TYPE,
        h.ERROR_MESSAGE,
        h.STAGE,
        h.DELIVERY,
        h.FAILED_AT,
        h.ORIGINAL_MSG_ID,
        h.ORIGINAL_SUBJECT,
        h.ORIGINAL_STREAM,
        h.ORIGINAL_SEQUENCE,
        h.ORIGINAL_SIZE,
        h.TRUNCATED,
        h.HEADERS_DROPPED,
    }
)
_INTERNAL_PREFIXES = ("KV_", "OBJ_")
_MAX_STREAMS = 256
_MAX_PAGE = 200
_PREVIEW = 512  # body bytes shown per dead letter in a listing


@dataclass(frozen=True, slots=True)
class DeadLetterMessage:
    """One message of a dead-letter stream."""

    stream: str
    seq: int
    subject: str
    time: float | None
    headers: dict[str, str]
    data: bytes

    @property
    def original_subject(self) -> str:
        """Where the message was going when it failed (``""``: not a jsflow dead letter)."""
        return self.headers.get(h.ORIGINAL_SUBJECT, "")

    @property
    def original_stream(self) -> str | None:
        """The stream the original was read from."""
        return self.headers.get(h.ORIGINAL_STREAM)

    @property
    def original_sequence(self) -> int | None:
        """The original's sequence in :attr:`original_stream`."""
        return _int_or_none(self.headers.get(h.ORIGINAL_SEQUENCE))

    @property
    def error_type(self) -> str:
        """The class name of the error that dead-lettered it."""
        return self.headers.get(h.ERROR_TYPE, "")

    @property
    def error_message(self) -> str:
        """The error's message (bounded)."""
        return self.headers.get(h.ERROR_MESSAGE, "")

    @property
    def stage(self) -> str | None:
        """The stage that failed (flows; ``None`` for a router's dead letters)."""
        return self.headers.get(h.STAGE)

    @property
    def delivery(self) -> int | None:
        """The delivery that failed for the last time."""
        return _int_or_none(self.headers.get(h.DELIVERY))

    @property
    def failed_at(self) -> str | None:
        """When it failed (ISO 8601, UTC)."""
        return self.headers.get(h.FAILED_AT)

    @property
    def truncated(self) -> bool:
        """Whether the body was cut to fit the server's ``max_payload``."""
        return self.headers.get(h.TRUNCATED) == "true"


def _int_or_none(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def _is_dead_letter(headers: dict[str, str]) -> bool:
    return h.ERROR_TYPE in headers and h.ORIGINAL_SUBJECT in headers


class FlowMonitor:
    """Streams and dead letters of one connection.

    ``dead_letter_streams`` are always treated as dead-letter streams; any other stream is
    one when its oldest message is a jsflow dead letter (checked once per stream and first
    sequence, one get each). ``exclude`` names streams that are no flow's (KV and object
    store streams are never one).
    """

    def __init__(
        self,
        client: Client,
        dead_letter_streams: tuple[str, ...] = (),
        *,
        exclude: Iterable[str] = (),
    ) -> None:
        self._client = client
        self._exclude = frozenset(exclude)  # streams that are not flows' (the tasks stream)
        self.configured = frozenset(self.check_names(dead_letter_streams))
        self._known: set[str] = set(self.configured)
        self._checked: dict[str, int] = {}  # stream -> first sequence already checked

    @staticmethod
    def check_names(streams: Iterable[str]) -> list[str]:
        """``streams`` if each is a legal stream name (:class:`InvalidNameError` otherwise)."""
        return [check_name("dead-letter stream", s) for s in streams]

    async def _streams(self) -> list[api.StreamInfo]:
        js = self._client.js
        found: list[api.StreamInfo] = []
        with map_nats_errors(subject="$JS.API.STREAM.LIST"):
            while len(found) < _MAX_STREAMS:
                page = await js.streams_info(offset=len(found))
                if not page:
                    break
                found.extend(page)
        return found

    async def _detect(self, info: api.StreamInfo) -> bool:
        name = info.config.name or ""
        if name in self._known:
            return True
        state = info.state
        if not state.messages or self._checked.get(name) == state.first_seq:
            return False
        self._checked[name] = state.first_seq
        msg = await self._next(name, state.first_seq)
        if msg is not None and _is_dead_letter(msg.headers):
            self._known.add(name)
            return True
        return False

    async def _next(self, stream: str, seq: int) -> DeadLetterMessage | None:
        """The first message of ``stream`` at or after ``seq`` (``None``: none)."""
        with map_nats_errors(subject=stream):
            try:
                raw = await self._client.js.get_msg(stream, seq=max(1, seq), subject=">", next=True)
            except js_errors.NotFoundError as exc:
                if exc.err_code == codes.STREAM_NOT_FOUND:
                    raise DeadLetterNotFoundError(f"no stream {stream!r}") from exc
                return None
        return _message(stream, raw)

    async def _get(self, stream: str, seq: int) -> DeadLetterMessage:
        with map_nats_errors(subject=stream):
            try:
                raw = await self._client.js.get_msg(stream, seq=seq)
            except js_errors.NotFoundError as exc:
                raise DeadLetterNotFoundError(
                    f"no message at sequence {seq} in stream {stream!r}"
                ) from exc
        return _message(stream, raw)

    async def flows(self) -> list[dict[str, Any]]:
        """Every user stream (not a KV or object store, nor one of ``exclude``) with its
        counts, its consumers' lag and whether it holds dead letters."""
        infos = [
            i
            for i in await self._streams()
            if (i.config.name or "") not in self._exclude
            and not (i.config.name or "").startswith(_INTERNAL_PREFIXES)
        ]
        dead = await asyncio.gather(*(self._detect(i) for i in infos))
        consumers = await asyncio.gather(*(self._consumers(i) for i in infos))
        out = []
        for info, is_dead, cons in zip(infos, dead, consumers, strict=True):
            state = info.state
            out.append(
                {
                    "stream": info.config.name,
                    "subjects": list(info.config.subjects or []),
                    "messages": state.messages,
                    "bytes": state.bytes,
                    "first_seq": state.first_seq,
                    "last_seq": state.last_seq,
                    "consumer_count": state.consumer_count,
                    "dead_letter": is_dead,
                    "consumers": cons,
                }
            )
        return out

    async def _consumers(self, info: api.StreamInfo) -> list[dict[str, Any]]:
        if not info.state.consumer_count:
            return []
        name = info.config.name or ""
        with map_nats_errors(subject=name):
            try:
                found = await self._client.js.consumers_info(name)
            except js_errors.NotFoundError:
                return []
        return [
            {
                "name": c.name,
                "durable": bool(c.config.durable_name),
                "pending": c.num_pending or 0,
                "ack_pending": c.num_ack_pending or 0,
                "redelivered": c.num_redelivered or 0,
                "waiting": c.num_waiting or 0,
            }
            for c in found
        ]

    async def dead_letter_streams(self) -> list[dict[str, Any]]:
        """The dead-letter streams with their message counts."""
        return [f for f in await self.flows() if f["dead_letter"]]

    async def _check_stream(self, stream: str) -> None:
        check_name("dead-letter stream", stream)
        if stream in self._known:
            return
        with map_nats_errors(subject=stream):
            try:
                info = await self._client.js.stream_info(stream)
            except js_errors.NotFoundError as exc:
                raise DeadLetterNotFoundError(f"no dead-letter stream {stream!r}") from exc
        if not await self._detect(info):
            raise DeadLetterNotFoundError(f"stream {stream!r} holds no dead letters")

    async def list(
        self, stream: str, after: int, limit: int
    ) -> tuple[list[DeadLetterMessage], int]:
        """Up to ``limit`` messages of ``stream`` after sequence ``after``, oldest first, and
        the sequence to list after next (0: nothing more now)."""
        await self._check_stream(stream)
        limit = min(limit, _MAX_PAGE)
        out: list[DeadLetterMessage] = []
        seq = after + 1
        while len(out) < limit:
            msg = await self._next(stream, seq)
            if msg is None:
                return out, 0
            out.append(msg)
            seq = msg.seq + 1
        return out, out[-1].seq

    async def get(self, stream: str, seq: int) -> DeadLetterMessage:
        """The message at ``seq`` of dead-letter stream ``stream``."""
        await self._check_stream(stream)
        return await self._get(stream, seq)

    async def replay(self, stream: str, seq: int, *, keep: bool = False) -> dict[str, Any]:
        """Republish the dead letter at ``seq`` to its original subject; remove it from
        ``stream`` afterwards unless ``keep``. Idempotent for the duplicate window of the
        target stream (the dedupe id names the dead letter)."""
        msg = await self.get(stream, seq)
        target = msg.original_subject
        if not target:
            raise NotReplayableError(
                f"message {seq} of {stream!r} has no {h.ORIGINAL_SUBJECT} header: not a "
                "jsflow dead letter"
            )
        check_subject(h.ORIGINAL_SUBJECT, target)
        data, headers = msg.data, _replay_headers(msg.headers)
        if msg.headers.get(h.TRUNCATED) == "true" or h.HEADERS_DROPPED in msg.headers:
            data, headers = await self._original(msg)
        headers[h.MSG_ID] = f"jsflow-replay:{stream}:{seq}"
        with map_nats_errors(subject=target):
            into = await self._client.js.find_stream_name_by_subject(target)
            if into == stream:
                raise NotReplayableError(
                    f"{target!r} is captured by the dead-letter stream {stream!r} itself"
                )
            ack = await self._client.js.publish(target, data, headers=headers)
        deleted = False
        if not keep:
            with map_nats_errors(subject=stream):
                try:
                    deleted = bool(await self._client.js.delete_msg(stream, seq))
                except js_errors.NotFoundError:
                    deleted = False  # replayed and removed concurrently
        return {
            "replayed": True,
            "subject": target,
            "stream": ack.stream,
            "seq": ack.seq,
            "duplicate": bool(ack.duplicate),
            "deleted": deleted,
        }

    async def _original(self, msg: DeadLetterMessage) -> tuple[bytes, dict[str, str]]:
        """Body and headers of a cut dead letter's original, from its stream."""
        where = msg.headers.get(h.ORIGINAL_STREAM)
        at = msg.original_sequence
        if not where or not at:
            raise NotReplayableError(
                f"message {msg.seq} of {msg.stream!r} was cut to fit and names no original"
            )
        with map_nats_errors(subject=where):
            try:
                raw = await self._client.js.get_msg(where, seq=at)
            except js_errors.NotFoundError as exc:
                raise NotReplayableError(
                    f"message {msg.seq} of {msg.stream!r} was cut to fit and its original "
                    f"({where} #{at}) is gone"
                ) from exc
        return bytes(raw.data or b""), h.propagated(raw.headers)


def _replay_headers(headers: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in h.propagated(headers).items() if k not in _DEAD_LETTER_HEADERS}


def _message(stream: str, raw: api.RawStreamMsg) -> DeadLetterMessage:
    stamp = raw.time.timestamp() if raw.time is not None else None
    return DeadLetterMessage(
        stream=stream,
        seq=int(raw.seq or 0),
        subject=raw.subject or "",
        time=stamp,
        headers=dict(raw.headers or {}),
        data=bytes(raw.data or b""),
    )
