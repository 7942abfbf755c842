"""Helpers of the tests that kill nodes of a LocalCluster(3): retrying while leaders are
elected, finding and killing a stream's leader, waiting until a stream has healed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import nats.errors

import jsflow

T = TypeVar("T")

# What a request may fail with while a node is down or leaders are being elected: jsflow's
# errors, and nats-py's for the raw JetStream calls these tests make themselves.
TRANSIENT = (jsflow.JsflowError, nats.errors.Error, TimeoutError)

__all__ = [
    "TRANSIENT",
    "connect",
    "healed",
    "kill_leader_of",
    "leader",
    "outcome",
    "replicas",
    "restart",
    "retry",
    "wait_for",
]


async def retry(make: Callable[[], Awaitable[T]], attempts: int = 80) -> T:
    """Run ``make()`` until it succeeds: the cluster may still be electing leaders.

    A task's own outcome (:class:`jsflow.TaskError`) is an answer, not a transient failure.
    """
    for _ in range(attempts - 1):
        try:
            return await make()
        except jsflow.TaskError:
            raise
        except TRANSIENT:
            await asyncio.sleep(0.25)
    return await make()


async def connect(cluster: jsflow.LocalCluster) -> jsflow.Client:
    return await jsflow.connect(cluster.urls, replicas=3, timeout=2.0)


async def leader(client: jsflow.Client, stream: str) -> int:
    """Index in ``cluster.servers`` of the server leading ``stream`` (named ``jsflow-n<i>``)."""
    info = await client.js.stream_info(stream)
    assert info.cluster is not None and info.cluster.leader, f"{stream} has no leader"
    leader = str(info.cluster.leader)
    assert leader.startswith("jsflow-n"), leader
    return int(leader.removeprefix("jsflow-n"))


async def replicas(client: jsflow.Client, stream: str) -> int:
    info = await client.js.stream_info(stream)
    return int(info.config.num_replicas or 1)


async def healed(client: jsflow.Client, stream: str, timeout: float = 30.0) -> bool:
    """Wait (at most ``timeout``) until ``stream`` has a leader and every replica is current."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            info = await client.js.stream_info(stream)
        except TRANSIENT:
            await asyncio.sleep(0.25)
            continue
        cl = info.cluster
        peers = (cl.replicas or []) if cl is not None else []
        ready = cl is not None and cl.leader and len(peers) == 2
        if ready and all(p.current and not p.offline for p in peers):
            return True
        await asyncio.sleep(0.25)
    return False


async def kill_leader_of(cluster: jsflow.LocalCluster, client: jsflow.Client, stream: str) -> int:
    """Kill -9 the server leading ``stream`` once the stream is fully replicated."""
    await healed(client, stream)
    victim = await retry(lambda: leader(client, stream))
    cluster.servers[victim].kill()
    return victim


async def restart(cluster: jsflow.LocalCluster, victim: int) -> None:
    await cluster.servers[victim].start()
    await cluster.wait_jetstream_ready()


async def wait_for(check: Callable[[], bool], timeout: float) -> bool:
    """Poll ``check`` (at most ``timeout``); whether it became true. A bound, not a timing."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


async def outcome(handle: jsflow.TaskHandle[Any], deadline: float) -> Any:
    """The task's result, waiting until ``deadline`` through failed requests; an exception
    (a :class:`TaskError`, or :class:`RequestTimeoutError` past the deadline) is returned."""
    while True:
        left = deadline - time.monotonic()
        try:
            return await handle.result(timeout=max(left, 0.1))
        except jsflow.TaskError as exc:
            return exc
        except TRANSIENT as exc:
            if time.monotonic() >= deadline:
                return exc
            await asyncio.sleep(0.25)
