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

from jsflow._js.codes import REPLICAS_UNAVAILABLE, STREAM_NAME_IN_USE
from jsflow._js.errors import map_nats_errors
from jsflow.errors import ConfigError, JsflowError, RequestTimeoutError, ServerError
from jsflow.observability import get_logger

__all__ = ["await_leader", "bound_replicas", "create_or_bind"]

_log = get_logger(__name__)


async def create_or_bind(
    js: JetStreamContext, config: api.StreamConfig, *, timeout: float
) -> tuple[api.StreamInfo, bool]:
    """The stream ``config.name``: bound when it exists (left as it is: its subjects and
    limits are the operator's), else created from ``config``. Returns its info and whether
    this call created it. A replicated stream it created has a leader when this returns
    (bounded by ``timeout``): a write before that finds no stream."""
    name = config.name or ""
    wanted = config.num_replicas or 1
    with map_nats_errors(subject=name):
        try:
            return await _bound(js, await js.stream_info(name), wanted), False
        except js_errors.NotFoundError:
            pass
        try:
            info = await js.add_stream(config)
        except js_errors.APIError as exc:
            if exc.err_code in REPLICAS_UNAVAILABLE:
                raise _too_many(name, wanted, exc) from None
            if exc.err_code != STREAM_NAME_IN_USE:
                raise
            # created concurrently: bind it
            return await _bound(js, await js.stream_info(name), wanted), False
    if wanted > 1:
        await await_leader(js, name, timeout=timeout)
    return info, True


def _too_many(name: str, wanted: int, exc: js_errors.APIError) -> ConfigError:
    return ConfigError(
        f"stream {name!r}: replicas={wanted} is more than the servers can hold "
        f"({exc.description}); use at most as many replicas as the cluster has servers"
    )


async def bound_replicas(js: JetStreamContext, info: api.StreamInfo, wanted: int) -> None:
    """Make an existing stream (or bucket) hold at least ``wanted`` replicas: scale it up
    (the server copies the data to the new replicas; nothing is lost) and log it, or raise
    :class:`ConfigError` when the servers cannot. A stream with more replicas is left as
    it is. Never silently work on fewer copies than asked for."""
    have = info.config.num_replicas or 1
    if have >= wanted:
        return
    name = info.config.name or ""
    info.config.num_replicas = wanted
    try:
        with map_nats_errors(subject=name):
            try:
                await js.update_stream(info.config)
            except js_errors.APIError as exc:
                if exc.err_code in REPLICAS_UNAVAILABLE:
                    raise _too_many(name, wanted, exc) from None
                raise
    except ConfigError:
        raise
    except JsflowError as exc:
        raise ConfigError(
            f"stream {name!r} has {have} replica(s), {wanted} were asked for, and it could "
            f"not be scaled up: {exc}"
        ) from exc
    _log.warning("streams.scaled_up", stream=name, replicas_before=have, replicas=wanted)


async def _bound(js: JetStreamContext, info: api.StreamInfo, wanted: int) -> api.StreamInfo:
    await bound_replicas(js, info, wanted)
    return info


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
