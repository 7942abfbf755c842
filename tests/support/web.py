"""Helpers of the gateway tests (no tests of its own): a real uvicorn on a free loopback
port serving an ASGI app in this event loop, a reader of server-sent events, and what a
stream holds."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import uvicorn

from tests.support.names import uniq
from tests.support.polling import eventually
from tests.support.streams import stream_msgs


@contextlib.asynccontextmanager
async def serving(asgi: Any) -> AsyncIterator[str]:
    """Run ``asgi`` under uvicorn on 127.0.0.1 (a free port); yields its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        asgi,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        lifespan="on",
        timeout_graceful_shutdown=2,
        backlog=2048,
    )
    server = uvicorn.Server(config)
    task = asyncio.get_running_loop().create_task(server.serve(sockets=[sock]))
    try:
        async with asyncio.timeout(15):
            while not server.started:
                if task.done():
                    task.result()
                    raise RuntimeError("uvicorn exited before it started")
                await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        async with asyncio.timeout(15):
            with contextlib.suppress(Exception):
                await task
        sock.close()


@dataclass
class Sse:
    """One server-sent event as read off the wire."""

    event: str = "message"
    data: str = ""
    id: str | None = None
    comments: list[str] = field(default_factory=list)

    def json(self) -> Any:
        return json.loads(self.data)


async def sse_events(resp: httpx.Response) -> AsyncIterator[Sse]:
    """The events of an open ``text/event-stream`` response (comments collected on the
    event that follows them; a trailing comment is yielded as an event of kind
    ``"comment"``)."""
    current = Sse()
    has_field = False
    async for line in resp.aiter_lines():
        if line == "":
            if has_field:
                yield current
            elif current.comments:
                yield Sse(event="comment", comments=current.comments)
            current, has_field = Sse(), False
            continue
        if line.startswith(":"):
            current.comments.append(line[1:].strip())
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        has_field = True
        if name == "data":
            current.data = f"{current.data}\n{value}" if current.data else value
        elif name == "event":
            current.event = value
        elif name == "id":
            current.id = value


__all__ = ["Sse", "eventually", "serving", "sse_events", "stream_msgs", "uniq"]
