"""Helpers of the gateway tests (no tests of its own): a real uvicorn on a free loopback
port serving an ASGI app in this event loop, a reader of server-sent events, and what a
stream holds."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import nats.js.errors
import uvicorn

import jsflow


def uniq(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


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


async def stream_msgs(client: jsflow.Client, stream: str) -> list[Any]:
    """Every message ``stream`` holds now (raw nats-py messages, by sequence)."""
    try:
        info = await client.js.stream_info(stream)
    except nats.js.errors.NotFoundError:
        return []
    out: list[Any] = []
    for seq in range(max(1, info.state.first_seq), info.state.last_seq + 1):
        try:
            out.append(await client.js.get_msg(stream, seq))
        except nats.js.errors.NotFoundError:
            continue
    return out


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 15.0) -> None:
    """Poll ``check`` until it is true; fail after ``timeout`` (a hang guard only)."""
    async with asyncio.timeout(timeout):
        while not await check():
            await asyncio.sleep(0.05)
