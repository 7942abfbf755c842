"""Sinks: where a flow's outputs go. :class:`StreamSink` publishes them to JetStream."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar, runtime_checkable

import jsflow.flow.headers as h
from jsflow._js import map_nats_errors
from jsflow._validate import check_name, check_subject
from jsflow.codec import Codec, codec_for, encode_value
from jsflow.connection import check_replicas
from jsflow.errors import ConfigError
from jsflow.flow.message import Message
from jsflow.flow.streams import ensure_stream

if TYPE_CHECKING:
    from jsflow.client import Client

__all__ = ["Sink", "StreamSink", "encode_value"]

T = TypeVar("T")


@runtime_checkable
class Sink(Protocol):
    """Where outputs go: ``publish`` returns only once the output is durably accepted."""

    async def open(self, client: Client) -> None:
        """Prepare (create streams, bind); idempotent."""
        ...

    async def publish(self, msg: Message[Any], msg_id: str) -> None:
        """Publish ``msg`` with the dedupe id ``msg_id``; raise when it was not accepted."""
        ...


class StreamSink(Generic[T]):
    """Publishes outputs to ``subject`` with JetStream, awaiting each PubAck.

    The subject must be captured by a stream: an existing one, or ``stream`` created for it
    when named. Values are encoded with ``codec``, the codec of ``tp``, or the codec
    inferred from each value's type. Every publish carries ``Nats-Msg-Id``, so a
    redelivered source message does not duplicate its outputs within the duplicate window.
    ``replicas`` (1-5, default the client's) applies when ``stream`` is created.
    """

    def __init__(
        self,
        subject: str,
        stream: str | None = None,
        tp: type[T] | None = None,
        *,
        codec: Codec[T] | None = None,
        replicas: int | None = None,
    ) -> None:
        self.subject = check_subject("sink subject", subject)
        self.stream = None if stream is None else check_name("sink stream", stream)
        self.replicas = None if replicas is None else check_replicas(replicas)
        self.codec: Codec[Any] | None = codec_for(tp, codec) if tp is not None else codec
        self._client: Client | None = None

    async def open(self, client: Client) -> None:
        """Create ``stream`` for the subject when named and absent; remember the client."""
        if self.stream is not None:
            await ensure_stream(client, self.stream, [self.subject], replicas=self.replicas)
        self._client = client

    async def publish(self, msg: Message[Any], msg_id: str) -> None:
        """Publish ``msg.data`` with ``msg``'s headers plus ``Nats-Msg-Id: msg_id``."""
        if self._client is None:
            raise ConfigError("StreamSink.open() was not called")
        data = encode_value(msg.data, self.codec)
        headers = h.propagated(dict(msg.headers))
        headers[h.MSG_ID] = msg_id
        if msg.correlation_id:
            headers[h.CORRELATION_ID] = msg.correlation_id
        with map_nats_errors(subject=self.subject):
            await self._client.js.publish(self.subject, data, headers=headers)

    def __repr__(self) -> str:
        return f"StreamSink({self.subject!r})"
