"""Names unique to one test, a free port, and a second client on the same server."""

from __future__ import annotations

import socket
import uuid

import jsflow


def uniq(prefix: str) -> str:
    """A stream-, subject-, bucket- and task-safe name unique to one test."""
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def free_port() -> int:
    """A loopback TCP port nothing listens on (free when this returns)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def second_client(client: jsflow.Client, **options: object) -> jsflow.Client:
    """Another client (another process, as the server sees it) on ``client``'s server."""
    return await jsflow.connect(client.nc.connected_url.geturl(), **options)  # type: ignore[union-attr, arg-type]
