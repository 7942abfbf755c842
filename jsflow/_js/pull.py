"""Pull requests to a durable consumer: the one fetch mechanism of every consume loop."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import deque
from typing import Any

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from jsflow._js.headers import DESCRIPTION, STATUS
from jsflow.errors import ConnectionClosedError, RequestTimeoutError, ServerError

__all__ = ["Puller"]

_GRACE = 0.5  # seconds a fetch waits past its pull request's expiry for the server's answer


class Puller:
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

    def __init__(self, nc: NatsClient, js: JetStreamContext, stream: str, durable: str) -> None:
        self._nc = nc
        prefix = getattr(js, "_prefix", None) or "$JS.API"
        self._next_subject = f"{prefix}.CONSUMER.MSG.NEXT.{stream}.{durable}"
        self._inbox = nc.new_inbox()
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
        status = msg.headers.get(STATUS) if msg.headers else None
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
            if self._nc.is_closed:
                raise ConnectionClosedError(f"the connection is closed ({self._next_subject})")
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
            if status is None or status.headers.get(STATUS) in ("404", "408"):
                raise RequestTimeoutError("no messages")
            description = status.headers.get(DESCRIPTION, "")
            raise ServerError(
                f"pull request on {self._next_subject} failed: "
                f"{status.headers.get(STATUS)} {description}"
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
