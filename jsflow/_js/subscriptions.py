"""Core NATS subscriptions whose interest the server has before they are used."""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Awaitable, Callable
from typing import Any

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from jsflow._js.errors import map_nats_errors

__all__ = ["SharedSubscription", "subscribe_confirmed"]


async def subscribe_confirmed(
    nc: NatsClient, subject: str, cb: Callable[[Msg], Awaitable[None]], *, timeout: float
) -> Any:
    """Subscribe ``cb`` to ``subject`` and return once the server has the interest (a
    flush round trip), so that anything published after this returns is delivered; the
    subscription is removed again when that fails."""
    with map_nats_errors(subject=subject):
        sub = await nc.subscribe(subject, cb=cb)
        try:
            await nc.flush(timeout=math.ceil(timeout))
        except BaseException:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
            raise
    return sub


class SharedSubscription:
    """A core subscription of ``cb`` to ``subject`` that exists while it has users: the one
    mechanism of the hubs that fan one subscription out to many followers in process.

    :meth:`ensure` subscribes (confirmed, see :func:`subscribe_confirmed`) unless it is in
    place; :meth:`release_when_idle` drops it, in a task, once ``idle()`` says nobody uses
    it any more; :meth:`close` drops it now. Subscribing and dropping take turns (a lock), so
    a follower joining while the last one leaves keeps the subscription.
    """

    def __init__(
        self, subject: str, cb: Callable[[Msg], Awaitable[None]], idle: Callable[[], bool]
    ) -> None:
        self.subject = subject
        self._cb = cb
        self._idle = idle
        self._sub: Any = None
        self._lock = asyncio.Lock()
        self._stopping: asyncio.Task[None] | None = None

    @property
    def active(self) -> bool:
        """Whether the subscription is in place."""
        return self._sub is not None

    async def ensure(self, nc: NatsClient, *, timeout: float) -> None:
        """Subscribe unless subscribed; returns once the server has the interest."""
        async with self._lock:
            if self._sub is None:
                self._sub = await subscribe_confirmed(nc, self.subject, self._cb, timeout=timeout)

    def release_when_idle(self) -> None:
        """Drop the subscription soon if nobody uses it (no running loop: :meth:`close`)."""
        if self._sub is None or self._stopping is not None or not self._idle():
            return
        with contextlib.suppress(RuntimeError):
            self._stopping = asyncio.get_running_loop().create_task(self._stop_if_idle())

    async def _stop_if_idle(self) -> None:
        try:
            async with self._lock:
                if self._idle() and self._sub is not None:
                    sub, self._sub = self._sub, None
                    with contextlib.suppress(Exception):
                        await sub.unsubscribe()
        finally:
            self._stopping = None

    async def close(self) -> None:
        """Drop the subscription now (after a drop already under way)."""
        stopping = self._stopping
        if stopping is not None:
            with contextlib.suppress(Exception):
                await stopping
        sub, self._sub = self._sub, None
        if sub is not None:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
