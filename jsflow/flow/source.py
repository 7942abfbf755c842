"""``StreamSource``: a durable pull consumer on a stream, decoding messages into ``Message[T]``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Generic, TypeVar

import jsflow.flow.headers as h
from jsflow._js import Msg, Puller, api, map_nats_errors
from jsflow._validate import check_name, check_subject, count, duration, number
from jsflow.codec import Codec, codec_for
from jsflow.connection import check_replicas
from jsflow.errors import (
    CodecError,
    ConfigError,
)
from jsflow.flow.message import Message
from jsflow.flow.streams import ensure_stream

if TYPE_CHECKING:
    from jsflow.client import Client

__all__ = ["StreamSource"]

T = TypeVar("T")


class StreamSource(Generic[T]):
    """Messages of ``subjects`` in ``stream``, read by the durable pull consumer ``durable``.

    The stream is created (file storage) when absent, else bound as it is. The consumer uses
    explicit acks with ``ack_wait`` seconds; a flow keeps extending the deadline while a
    message is being processed, so ``ack_wait`` bounds how long a crashed worker holds a
    message, not how long a stage may take. ``batch`` is the most messages one fetch asks for.
    ``replicas`` (1-5, default the client's) applies when the stream is created; the
    consumer has as many as its stream.
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
        replicas: int | None = None,
    ) -> None:
        if isinstance(subjects, str):
            subject_list = [subjects]
        elif isinstance(subjects, list | tuple):
            subject_list = list(subjects)
        else:
            raise ConfigError(f"subjects must be a str or a list of them, got {subjects!r}")
        if not subject_list:
            raise ConfigError("StreamSource needs one or more subjects")
        for subject in subject_list:
            check_subject("subject", subject, wildcards=True)
        stream = check_name("stream", stream)
        durable = check_name("durable", durable)
        batch = count("batch", batch, maximum=10_000)
        ack_wait = duration("ack_wait", ack_wait)
        fetch_timeout = number("fetch_timeout", fetch_timeout, minimum=0.01, maximum=3600.0)
        max_ack_pending = count("max_ack_pending", max_ack_pending, maximum=10_000_000)
        self.stream = stream
        self.subjects = subject_list
        self.durable = durable
        self.codec: Codec[T] = codec_for(tp, codec)
        self.batch = batch
        self.ack_wait = ack_wait
        self.fetch_timeout = fetch_timeout
        self.max_ack_pending = max_ack_pending
        self.replicas = None if replicas is None else check_replicas(replicas)
        self._puller: Puller | None = None

    async def open(self, client: Client, *, max_deliver: int = -1) -> None:
        """Create or bind the stream and the durable consumer, and subscribe (idempotent)."""
        if self._puller is not None:
            return
        await ensure_stream(client, self.stream, self.subjects, replicas=self.replicas)
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
            puller = Puller(client.nc, client.js, self.stream, self.durable)
            await puller.start()
        self._puller = puller

    async def fetch(self, n: int, timeout: float | None = None) -> list[Msg]:
        """Up to ``n`` raw messages; :class:`RequestTimeoutError` when none came in time."""
        if self._puller is None:
            raise ConfigError("StreamSource.open() was not called")
        with map_nats_errors(subject=",".join(self.subjects)):
            return await self._puller.fetch(n, timeout or self.fetch_timeout)

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

    async def stop_fetching(self) -> None:
        """Let an open pull request end and stop receiving; fetched messages stay buffered.

        A request cut short by cancellation is still open on the server, which would deliver
        to it what is nak'ed meanwhile: a flow calls this before handing messages back.
        """
        if self._puller is not None:
            await self._puller.stop_receiving()

    async def close(self) -> None:
        """Stop the subscription, nak what it buffered (the durable consumer stays)."""
        puller, self._puller = self._puller, None
        if puller is not None:
            await puller.close()

    def __repr__(self) -> str:
        return f"StreamSource({self.stream!r}, {self.subjects!r}, {self.durable!r})"
