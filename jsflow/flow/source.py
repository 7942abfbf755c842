"""``StreamSource``: a durable pull consumer on a stream, decoding messages into ``Message[T]``."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import nats.errors
from nats.aio.msg import Msg
from nats.js import api

from jsflow.codec import Codec, codec_for
from jsflow.errors import CodecError, ConfigError, RequestTimeoutError, map_nats_errors
from jsflow.flow import headers as h
from jsflow.flow._streams import ensure_stream
from jsflow.flow.message import Message

if TYPE_CHECKING:
    from jsflow.client import Client

__all__ = ["StreamSource"]

T = TypeVar("T")
_NAME = re.compile(r"^[A-Za-z0-9_-]+$")


class StreamSource(Generic[T]):
    """Messages of ``subjects`` in ``stream``, read by the durable pull consumer ``durable``.

    The stream is created (file storage) when absent, else bound as it is. The consumer uses
    explicit acks with ``ack_wait`` seconds; a flow keeps extending the deadline while a
    message is being processed, so ``ack_wait`` bounds how long a crashed worker holds a
    message, not how long a stage may take. ``batch`` is the most messages one fetch asks for.
    """

    def __init__(
        self,
        stream: str,
        subjects: str | list[str],
        durable: str,
        tp: type[T],
        *,
        codec: Codec[T] | None = None,
        batch: int = 100,
        ack_wait: float = 30.0,
        fetch_timeout: float = 1.0,
        max_ack_pending: int = 10_000,
    ) -> None:
        subject_list = [subjects] if isinstance(subjects, str) else list(subjects)
        if not _NAME.match(stream or ""):
            raise ConfigError(f"invalid stream name {stream!r}: use A-Z a-z 0-9 - _")
        if not _NAME.match(durable or ""):
            raise ConfigError(f"invalid durable name {durable!r}: use A-Z a-z 0-9 - _")
        if not subject_list or not all(isinstance(s, str) and s for s in subject_list):
            raise ConfigError(f"StreamSource needs one or more subjects, got {subjects!r}")
        if batch < 1:
            raise ConfigError(f"batch must be >= 1, got {batch}")
        if not ack_wait > 0 or not fetch_timeout > 0:
            raise ConfigError("ack_wait and fetch_timeout must be positive")
        if max_ack_pending < 1:
            raise ConfigError(f"max_ack_pending must be >= 1, got {max_ack_pending}")
        self.stream = stream
        self.subjects = subject_list
        self.durable = durable
        self.codec: Codec[T] = codec_for(tp, codec)
        self.batch = batch
        self.ack_wait = ack_wait
        self.fetch_timeout = fetch_timeout
        self.max_ack_pending = max_ack_pending
        self._sub: Any = None

    async def open(self, client: Client, *, max_deliver: int = -1) -> None:
        """Create or bind the stream and the durable consumer, and subscribe (idempotent)."""
        if self._sub is not None:
            return
        await ensure_stream(client, self.stream, self.subjects)
        config = api.ConsumerConfig(
            durable_name=self.durable,
            name=self.durable,
            ack_policy=api.AckPolicy.EXPLICIT,
            deliver_policy=api.DeliverPolicy.ALL,
            ack_wait=self.ack_wait,
            max_deliver=max_deliver,
            max_ack_pending=self.max_ack_pending,
        )
        if len(self.subjects) == 1:
            config.filter_subject = self.subjects[0]
        else:
            config.filter_subjects = self.subjects
        with map_nats_errors(subject=",".join(self.subjects)):
            await client.js.add_consumer(self.stream, config=config)
            self._sub = await client.js.pull_subscribe_bind(
                durable=self.durable, stream=self.stream
            )
        _speed_up_next_msg(getattr(self._sub, "_sub", None))

    async def fetch(self, n: int, timeout: float | None = None) -> list[Msg]:
        """Up to ``n`` raw messages; :class:`RequestTimeoutError` when none came in time."""
        if self._sub is None:
            raise ConfigError("StreamSource.open() was not called")
        with map_nats_errors(subject=",".join(self.subjects)):
            try:
                msgs: list[Msg] = await self._sub.fetch(n, timeout=timeout or self.fetch_timeout)
            except nats.errors.TimeoutError as exc:
                raise RequestTimeoutError("no messages") from exc
        return msgs

    def decode(self, raw: Msg, meta: Any = None) -> Message[T]:
        """Decode ``raw`` into a :class:`Message`; :class:`CodecError` when it does not decode.

        ``meta`` is ``raw.metadata`` when the caller already parsed it.
        """
        meta = meta if meta is not None else raw.metadata
        seq = int(meta.sequence.stream)
        stream = str(meta.stream)
        headers = dict(raw.headers or {})
        msg_id = headers.get(h.MSG_ID) or f"{stream}:{seq}"
        try:
            data = self.codec.decode(raw.data)
        except Exception as exc:
            raise CodecError(
                f"cannot decode message {stream}:{seq} on {raw.subject!r}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        return Message(
            data=data,
            subject=raw.subject,
            headers=headers,
            id=msg_id,
            delivery=int(meta.num_delivered),
            correlation_id=headers.get(h.CORRELATION_ID) or msg_id,
            sequence=seq,
            stream=stream,
            raw=raw,
        )

    async def close(self) -> None:
        """Stop the subscription (the durable consumer stays on the server)."""
        sub, self._sub = self._sub, None
        if sub is not None:
            await _nak_prefetched(sub)
            try:
                await sub.unsubscribe()
            except Exception:  # closing must go on; the consumer is durable anyway
                return

    def __repr__(self) -> str:
        return f"StreamSource({self.stream!r}, {self.subjects!r}, {self.durable!r})"


def _speed_up_next_msg(sub: Any) -> None:
    """Let ``fetch`` take already-delivered messages without a task switch each.

    nats-py's ``fetch(n)`` reads its ``n`` messages with ``sub.next_msg()``, which creates two
    tasks, a timer and a uuid per message even when the message is already queued: that
    was the largest per-message cost of a flow. This instance-level override returns a
    queued message at once (with nats-py's own bookkeeping) and defers to the original
    ``next_msg`` (timeouts, cancellation on unsubscribe) only when it has to wait.
    """
    queue = getattr(sub, "_pending_queue", None)
    original = getattr(sub, "next_msg", None)
    if queue is None or original is None or not hasattr(sub, "_pending_size"):
        return  # not the nats-py internals this was written for: keep the original
    conn = sub._conn

    async def next_msg(timeout: float | None = 1.0) -> Msg:
        if queue.empty() or conn.is_closed:
            msg: Msg = await original(timeout)
            return msg
        msg = queue.get_nowait()
        sub._pending_size -= len(msg.data)
        queue.task_done()
        return msg

    sub.next_msg = next_msg


async def _nak_prefetched(sub: Any) -> None:
    """Hand back messages a pull request delivered after its fetch returned.

    nats-py keeps them in the subscription's queue for the next fetch; on close nobody will
    fetch them, so nak them now rather than let them wait out ``ack_wait``.
    """
    queue = getattr(getattr(sub, "_sub", None), "_pending_queue", None)
    if queue is None:
        return
    while not queue.empty():
        msg = queue.get_nowait()
        if msg.reply and not (msg.headers or {}).get("Status"):
            try:
                await msg.nak()
            except Exception:  # the connection is going away: ack_wait redelivers it
                return
