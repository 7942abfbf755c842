"""``StreamSource``: a durable pull consumer on a stream, decoding messages into ``Message[T]``."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections import deque
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from nats.aio.msg import Msg
from nats.js import api

from jsflow.codec import Codec, codec_for
from jsflow.errors import (
    CodecError,
    ConfigError,
    RequestTimeoutError,
    ServerError,
    map_nats_errors,
)
from jsflow.flow import headers as h
from jsflow.flow.message import Message
from jsflow.flow.streams import ensure_stream

if TYPE_CHECKING:
    from jsflow.client import Client

__all__ = ["StreamSource"]

T = TypeVar("T")
_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
_STATUS = "Status"
_GRACE = 0.5  # seconds a fetch waits past its pull request's expiry for the server's answer


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
        self._puller: _Puller | None = None

    async def open(self, client: Client, *, max_deliver: int = -1) -> None:
        """Create or bind the stream and the durable consumer, and subscribe (idempotent)."""
        if self._puller is not None:
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
            puller = _Puller(client, self.stream, self.durable)
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


class _Puller:
    """Pull requests to one durable consumer, answered on one inbox subscription.

    Only public nats-py API: ``nc.subscribe`` with a callback and ``nc.publish`` of
    ``$JS.API.CONSUMER.MSG.NEXT`` requests. Each request asks for ``batch`` messages with
    ``no_wait`` and ``expires``: the server waits up to ``expires`` for the first message,
    then sends what it has and ends the request with a status (404 or 408). Deliveries go to
    a local buffer in arrival order (the subscription's callback, no task per message);
    each request's status comes on its own reply subject, so a late status of an older
    request never ends a newer one. Messages that arrive after their fetch returned (a
    request that outlived a client-side timeout) stay buffered for the next fetch and are
    nak'ed on close, so none waits out ``ack_wait`` unseen.
    """

    def __init__(self, client: Client, stream: str, durable: str) -> None:
        self._nc = client.nc
        prefix = getattr(client.js, "_prefix", None) or "$JS.API"
        self._next_subject = f"{prefix}.CONSUMER.MSG.NEXT.{stream}.{durable}"
        self._inbox = client.nc.new_inbox()
        self._sub: Any = None
        self._buffer: deque[Msg] = deque()
        self._seq = 0
        self._want = 0  # messages the open request may still deliver (0: none open)
        self._reply = ""  # reply subject of the open request
        self._deadline = 0.0  # monotonic time the open request expires on the server
        self._status: Msg | None = None  # the status that ended the open request
        self._wake: asyncio.Future[None] | None = None
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        """Subscribe to the inbox (one subscription for every request)."""
        self._sub = await self._nc.subscribe(f"{self._inbox}.*", cb=self._on_msg)

    async def _on_msg(self, msg: Msg) -> None:
        status = msg.headers.get(_STATUS) if msg.headers else None
        if status is None:
            self._buffer.append(msg)
            if self._want:
                self._want -= 1
                if not self._want:
                    self._wakeup()
            return
        if status == "100" or msg.subject != self._reply:
            return  # a heartbeat, or the end of a request a fetch already gave up on
        self._status = msg
        self._want = 0
        self._wakeup()

    def _wakeup(self) -> None:
        wake = self._wake
        if wake is not None and not wake.done():
            wake.set_result(None)

    def _take(self, n: int) -> list[Msg]:
        buffer = self._buffer
        if len(buffer) <= n:
            msgs = list(buffer)
            buffer.clear()
            return msgs
        return [buffer.popleft() for _ in range(n)]

    async def fetch(self, n: int, timeout: float) -> list[Msg]:
        """Up to ``n`` messages: buffered ones at once, else one pull request's answer."""
        async with self._lock:  # one request at a time per source
            if self._buffer:
                return self._take(n)
            self._seq += 1
            self._reply = f"{self._inbox}.{self._seq}"
            self._want = n
            self._status = None
            self._deadline = time.monotonic() + timeout
            expires = max(1_000_000, int(timeout * 1e9) - 100_000)  # ns, before the client
            request = json.dumps({"batch": n, "expires": expires, "no_wait": True})
            self._wake = asyncio.get_running_loop().create_future()
            try:
                await self._nc.publish(self._next_subject, request.encode(), reply=self._reply)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout + _GRACE):
                        await self._wake
            finally:
                self._wake = None
                if self._status is not None:
                    self._want = 0  # else left open: close() waits for its end
            msgs = self._take(n)
            status = self._status
            if msgs:
                return msgs
            if status is None or status.headers.get(_STATUS) in ("404", "408"):
                raise RequestTimeoutError("no messages")
            description = status.headers.get("Description", "")
            raise ServerError(
                f"pull request on {self._next_subject} failed: "
                f"{status.headers.get(_STATUS)} {description}"
            )

    async def stop_receiving(self) -> None:
        """Let an open request end (bounded by its expiry), then unsubscribe."""
        if self._want and self._sub is not None:
            remaining = self._deadline - time.monotonic()
            if remaining > 0:
                self._wake = asyncio.get_running_loop().create_future()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(remaining + _GRACE):
                        await self._wake
                self._wake = None
        sub, self._sub = self._sub, None
        if sub is not None:
            with contextlib.suppress(Exception):  # closing goes on; the consumer is durable
                await sub.unsubscribe()

    async def close(self) -> None:
        """Stop receiving, then nak the messages no fetch took."""
        await self.stop_receiving()
        while self._buffer:
            msg = self._buffer.popleft()
            try:
                await msg.nak()
            except Exception:  # the connection is going away: ack_wait redelivers it
                self._buffer.clear()
                return
