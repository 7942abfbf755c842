"""A shorter path for nats-py's writes and request replies (the client's CPU per round trip).

A nats-py request costs several event-loop passes beyond the network: the publish wakes the
flusher task through a queue, the reply wakes the response subscription's task through
another queue, its callback resolves the request's future, and ``asyncio.wait_for`` wraps that
future in a second one with its own callbacks. On a loopback server this client CPU is most
of a round trip. :class:`FastPathClient` keeps every protocol rule and removes the hops:

* **Writes**: the first write of an event-loop pass goes to the socket at once; what later
  ones of the same pass queue (``_pending``) goes out in one write when the pass ends
  (``call_soon``), so concurrent publishers still share a write. No flusher task wake-up.
  When more than :data:`WRITE_BUFFER_LIMIT` would sit in the socket's write buffer, the
  write goes to nats-py's flusher, which waits for it to drain, so a slow server still
  pushes back as before. Disconnected, nothing is written: the data stays pending for
  nats-py's reconnect to send, as before.
* **Replies**: the read loop resolves the request's future itself; the response
  subscription's queue and task are not used. The timeout is one timer on that future.
  :meth:`FastPathClient.send_request` returns that future without waiting on it (a
  JetStream publish whose ack is awaited later, with no task, semaphore or timer of
  nats-py's ``publish_async`` around it).

Anything else (websocket transports, old-style requests, every other subscription) takes
nats-py's own path.
"""

from __future__ import annotations

import asyncio
from secrets import token_hex
from typing import Any

from nats import errors as nats_errors
from nats.aio.client import Client as _NatsClient
from nats.aio.msg import Msg

__all__ = ["WRITE_BUFFER_LIMIT", "FastPathClient", "send_request"]

# asyncio's default high-water mark for a socket's write buffer: above it, drain() waits.
WRITE_BUFFER_LIMIT = 64 * 1024


def _expire(future: asyncio.Future[Msg]) -> None:
    if not future.done():
        future.set_exception(nats_errors.TimeoutError())


class FastPathClient(_NatsClient):
    """nats-py's client with fewer event-loop passes per write and per request reply."""

    def __init__(self) -> None:
        super().__init__()
        self._write_scheduled = False
        self._resp_sid: int | None = None

    # -- writes -------------------------------------------------------------------------

    def _socket_writer(self) -> asyncio.StreamWriter | None:
        writer = getattr(self._transport, "_io_writer", None)  # TCP and TLS, not websockets
        return writer if isinstance(writer, asyncio.StreamWriter) else None

    async def _flush_pending(self, force_flush: bool = False) -> Any:
        flusher = self._flusher_task
        if (
            force_flush
            or not self.is_connected
            or flusher is None
            or flusher.done()
            or self._socket_writer() is None
        ):
            return await super()._flush_pending(force_flush)
        if not self._write_scheduled:
            # The first write of a loop pass goes out at once; what later ones of the same
            # pass queue goes out in one write when the pass ends.
            self._write_scheduled = True
            asyncio.get_running_loop().call_soon(self._end_pass)
            self._write_pending()
        return None

    def _end_pass(self) -> None:
        self._write_scheduled = False
        self._write_pending()

    def _write_pending(self) -> None:
        if not self._pending_data_size or not self.is_connected:
            return  # sent already, or kept for the reconnect to send
        writer = self._socket_writer()
        queue = self._flush_queue
        buffered = 0 if writer is None else writer.transport.get_write_buffer_size()
        if writer is None or buffered + self._pending_data_size > WRITE_BUFFER_LIMIT:
            # Much to write, or the socket is backed up: the flusher writes and waits for
            # the socket to drain, so what a process holds stays bounded.
            if queue is not None and queue.empty():
                queue.put_nowait(asyncio.get_running_loop().create_future())
            return
        writer.writelines(self._pending)
        self._pending = []
        self._pending_data_size = 0

    # -- request replies ----------------------------------------------------------------

    async def _init_request_sub(self) -> None:
        await super()._init_request_sub()
        prefix = self._resp_sub_prefix
        mux = f"{prefix.decode()}*" if prefix is not None else None
        self._resp_sid = next((sid for sid, sub in self._subs.items() if sub.subject == mux), None)

    async def send_request(
        self,
        subject: str,
        payload: bytes = b"",
        *,
        timeout: float,
        headers: dict[str, Any] | None = None,
    ) -> asyncio.Future[Msg]:
        """Send a request now and return the future of its reply, without waiting for it:
        several requests travel back to back and their replies come back together. The
        future fails with nats-py's ``TimeoutError`` after ``timeout`` seconds; cancelling
        it forgets the request."""
        if self.is_draining_pubs:
            raise nats_errors.ConnectionDrainingError
        if not self._resp_sub_prefix:
            await self._init_request_sub()
        prefix = self._resp_sub_prefix
        assert prefix is not None
        token = f"{self._nuid.next().decode()}{token_hex(2)}"
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Msg] = loop.create_future()
        resp_map = self._resp_map
        resp_map[token] = future
        try:
            await self.publish(subject, payload, reply=f"{prefix.decode()}{token}", headers=headers)
        except BaseException:
            del resp_map[token]
            raise
        timer = loop.call_later(timeout, _expire, future)

        def settled(_: asyncio.Future[Msg]) -> None:
            timer.cancel()
            resp_map.pop(token, None)

        future.add_done_callback(settled)
        return future

    async def _request_new_style(
        self,
        subject: str,
        payload: bytes,
        timeout: float = 1,
        headers: dict[str, Any] | None = None,
    ) -> Msg:
        future = await self.send_request(subject, payload, timeout=timeout, headers=headers)
        try:
            return await future
        finally:
            future.cancel()  # a no-op once answered; else (our caller was cancelled) forget it

    async def _process_msg(
        self, sid: int, subject: bytes, reply: bytes, data: bytes, headers: bytes
    ) -> None:
        if sid != self._resp_sid or sid not in self._subs:
            await super()._process_msg(sid, subject, reply, data, headers)
            return
        prefix = self._resp_sub_prefix
        future = None if prefix is None else self._resp_map.get(subject[len(prefix) :].decode())
        if future is None or future.done():
            return  # late, or its request gave up
        self.stats["in_msgs"] += 1
        self.stats["in_bytes"] += len(data)
        hdr = await self._process_headers(headers)
        future.set_result(self._build_message(sid, subject, reply, data, hdr))


async def send_request(
    nc: _NatsClient,
    subject: str,
    payload: bytes = b"",
    *,
    timeout: float,
    headers: dict[str, Any] | None = None,
) -> asyncio.Future[Msg]:
    """:meth:`FastPathClient.send_request` on ``nc``; on any other nats-py client, the same
    through a task running ``nc.request``."""
    if isinstance(nc, FastPathClient):
        return await nc.send_request(subject, payload, timeout=timeout, headers=headers)
    return asyncio.ensure_future(nc.request(subject, payload, timeout=timeout, headers=headers))
