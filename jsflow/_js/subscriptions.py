"""Core NATS subscriptions whose interest the server has before they are used."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Awaitable, Callable
from typing import Any

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from jsflow._js.errors import map_nats_errors

__all__ = ["subscribe_confirmed"]


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
