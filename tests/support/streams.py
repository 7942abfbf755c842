"""What a stream or a consumer holds, the flow tests' source, and the task requests a
stream holds (no tests of its own)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import nats.js.errors

import jsflow
from jsflow.flow.message import Message
from jsflow.flow.source import StreamSource
from jsflow.tasks.streams import TASK_STREAM, request_subject


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


async def count_is(client: jsflow.Client, stream: str, n: int) -> bool:
    """Whether ``stream`` holds exactly ``n`` messages."""
    return len(await stream_msgs(client, stream)) == n


async def settled(client: jsflow.Client, stream: str, durable: str) -> bool:
    """Whether the consumer has nothing pending or unacked."""
    info = await client.js.consumer_info(stream, durable)
    return info.num_pending == 0 and info.num_ack_pending == 0


async def drained(
    client: jsflow.Client, durable: str, *, ack_pending: int = 0, stream: str = TASK_STREAM
) -> Any:
    """Until the consumer ``durable`` (of the task stream, unless told) has delivered
    something and everything, and holds ``ack_pending`` unacked; returns its info."""
    info = None
    for _ in range(500):
        info = await client.js.consumer_info(stream, durable)
        if (
            info.num_pending == 0
            and info.num_ack_pending == ack_pending
            and info.delivered.stream_seq
        ):
            return info
        await asyncio.sleep(0.02)
    raise AssertionError(f"consumer {durable} did not drain: {info}")


async def publish_json(client: jsflow.Client, subject: str, values: list[Any]) -> None:
    """Publish each value as JSON (stream must exist)."""
    for value in values:
        await client.js.publish(subject, json.dumps(value).encode())


def flow_source(
    name: str, tp: type = int, *, durable: str | None = None, **options: Any
) -> StreamSource[Any]:
    """The source of a flow test: stream ``IN_<name>`` on ``in.<name>``, durable
    ``d_<name>`` unless told, polling quickly."""
    options.setdefault("fetch_timeout", 0.25)
    return StreamSource(f"IN_{name}", f"in.{name}", durable or f"d_{name}", tp, **options)


def message(data: Any = 1, **fields: Any) -> Message[Any]:
    """A message as a stage sees it (subject ``s``, id ``m-1`` unless told, correlation id
    ``c-1``), for middleware tests without a flow."""
    return Message(
        data=data, subject="s", id=fields.pop("id", "m-1"), correlation_id="c-1", **fields
    )


async def request_counts(client: jsflow.Client, token: str) -> dict[str, int]:
    """The request subjects (and counts) the task stream holds for task token ``token``."""
    info = await client.js.stream_info(TASK_STREAM, subjects_filter=request_subject(token) + ".>")
    return dict(info.state.subjects or {})


async def stream_exists(client: jsflow.Client, name: str) -> bool:
    """Whether the server has a stream ``name`` (yet)."""
    try:
        await client.js.stream_info(name)
    except nats.js.errors.NotFoundError:
        return False
    return True
