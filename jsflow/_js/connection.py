"""Opening the nats-py connection (always a :class:`GuardedClient`)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from jsflow._js.errors import map_nats_errors
from jsflow._js.guard import GuardedClient

__all__ = ["jetstream_ready", "open_connection"]


async def open_connection(servers: list[str], **options: Any) -> GuardedClient:
    """Connect a :class:`GuardedClient` to ``servers`` with nats-py ``options``."""
    nc = GuardedClient()
    with map_nats_errors():
        await nc.connect(servers=servers, **options)
    return nc


async def jetstream_ready(url: str, deadline: float) -> bool:
    """Whether JetStream answers an account request through ``url`` before ``deadline``
    (a ``time.monotonic()`` value)."""
    nc = await open_connection([url], allow_reconnect=False)
    try:
        js = nc.jetstream(timeout=2.0)
        while True:
            try:
                await js.account_info()
                return True
            except Exception:
                if time.monotonic() > deadline:
                    return False
                await asyncio.sleep(0.1)
    finally:
        await nc.close()
