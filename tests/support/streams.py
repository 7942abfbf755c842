"""Helpers shared by the flow tests (no tests of its own)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import nats.js.errors

import jsflow


def unique(prefix: str) -> str:
    """A stream/subject-safe name unique to one test."""
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


async def stream_msgs(client: jsflow.Client, stream: str) -> list[Any]:
    """Every message currently stored in ``stream`` (raw nats-py messages, by sequence)."""
    try:
        info = await client.js.stream_info(stream)
    except nats.js.errors.NotFoundError:
        return []
    out: list[Any] = []
    if not info.state.messages:
        return out
    for seq in range(max(1, info.state.first_seq), info.state.last_seq + 1):
        try:
            out.append(await client.js.get_msg(stream, seq))
        except nats.js.errors.NotFoundError:
            continue
    return out


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 15.0) -> None:
    """Poll ``check`` until true; fail after a generous ``timeout`` (hang guard only)."""
    async with asyncio.timeout(timeout):
        while not await check():
            await asyncio.sleep(0.05)


async def count_is(client: jsflow.Client, stream: str, n: int) -> bool:
    """Whether ``stream`` holds exactly ``n`` messages."""
    return len(await stream_msgs(client, stream)) == n


async def settled(client: jsflow.Client, stream: str, durable: str) -> bool:
    """Whether the consumer has nothing pending or unacked."""
    info = await client.js.consumer_info(stream, durable)
    return info.num_pending == 0 and info.num_ack_pending == 0


async def publish_json(client: jsflow.Client, subject: str, values: list[Any]) -> None:
    """Publish each value as JSON (stream must exist)."""
    for value in values:
        await client.js.publish(subject, json.dumps(value).encode())
