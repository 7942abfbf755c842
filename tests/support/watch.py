"""Reading a watch change by change (bounded), and the consumers a bucket's stream has."""

from __future__ import annotations

import asyncio

import jsflow

STEP = 10.0  # generous per-change timeout: only there to turn a hang into a failure


async def next_change(watch: jsflow.Watch[int]) -> jsflow.Change[int]:
    """The next change of ``watch`` (fails after :data:`STEP` seconds)."""
    return await asyncio.wait_for(anext(watch), STEP)


async def take(watch: jsflow.Watch[int], n: int) -> list[tuple[str, int | None, jsflow.Op]]:
    """The next ``n`` changes of ``watch`` as (key, value, op)."""
    return [(c.key, c.value, c.op) for c in [await next_change(watch) for _ in range(n)]]


async def consumer_count(client: jsflow.Client, bucket: str) -> int:
    """How many consumers the stream of KV bucket ``bucket`` has."""
    info = await client.js.stream_info(f"KV_{bucket}")
    return int(info.state.consumer_count)
