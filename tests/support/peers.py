"""Peers that are not a NATS server, for the connect tests: a TCP listener running a
handler, one that sends an INFO line and records what the client sends."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager


def chain_texts(exc: BaseException | None) -> str:
    """The text of ``exc`` and of every exception it was raised from (to look for secrets)."""
    texts = []
    while exc is not None:
        texts.append(f"{exc!s} {exc!r}")
        exc = exc.__cause__ or exc.__context__
    return "\n".join(texts)


@asynccontextmanager
async def fake_server(
    handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
) -> AsyncIterator[int]:
    """A TCP listener on 127.0.0.1 running ``handler`` per connection; yields its port."""

    async def run(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await handler(reader, writer)
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(run, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


def fake_nats(info: str, received: list[bytes]) -> Callable[..., Awaitable[None]]:
    """A listener that sends ``info`` as its INFO line and records what the client sends."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(f"INFO {info}\r\n".encode())
        await writer.drain()
        while chunk := await reader.read(4096):
            received.append(chunk)

    return handler
