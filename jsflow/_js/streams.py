"""Creating or binding a stream: the one place jsflow adds streams to the server.

Every stream and bucket jsflow creates goes through :func:`create_or_bind`, so the race
of two processes creating the same stream, the replica count, and the wait for a
replicated stream's first leader are handled once.
"""

from __future__ import annotations

import asyncio
import time

from nats.js import JetStreamContext, api
from nats.js import errors as js_errors

from jsflow._js import codes
from jsflow._js.errors import map_nats_errors
from jsflow.errors import RequestTimeoutError, ServerError

__all__ = ["await_leader", "create_or_bind"]


async def create_or_bind(
    js: JetStreamContext, config: api.StreamConfig, *, timeout: float
) -> tuple[api.StreamInfo, bool]:
    """The stream ``config.name``: bound when it exists (left as it is: its subjects and
    limits are the operator's), else created from ``config``. Returns its info and whether
    this call created it. A replicated stream it created has a leader when this returns
    (bounded by ``timeout``): a write before that finds no stream."""
    name = config.name or ""
    with map_nats_errors(subject=name):
        try:
            return await js.stream_info(name), False
        except js_errors.NotFoundError:
            pass
        try:
            info = await js.add_stream(config)
        except js_errors.BadRequestError as exc:
            if exc.err_code != codes.STREAM_NAME_IN_USE:
                raise
            return await js.stream_info(name), False  # created concurrently: bind it
    if (config.num_replicas or 1) > 1:
        await await_leader(js, name, timeout=timeout)
    return info, True


async def await_leader(js: JetStreamContext, name: str, *, timeout: float) -> None:
    """Wait (at most ``timeout`` seconds) until stream ``name`` has a leader.

    A clustered stream answers its creation before its replicas elect a leader; a write in
    between finds no stream (``NoStreamResponseError``), so creators wait here instead.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            with map_nats_errors(subject=name):
                info = await js.stream_info(name)
            if info.cluster is None or info.cluster.leader:
                return
        except (RequestTimeoutError, ServerError):
            pass
        if time.monotonic() > deadline:
            raise ServerError(f"stream {name!r} has no leader after {timeout}s")
        await asyncio.sleep(0.05)
