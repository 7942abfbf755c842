"""When a client closes: its coordination waiters end with ConnectionClosedError instead of
waiting on, the leases it holds are freed at once, and released ones are forgotten."""

from __future__ import annotations

import asyncio

import pytest

import jsflow
from jsflow.client import Client
from jsflow.errors import ConnectionClosedError
from jsflow.server import EmbeddedServer
from tests.support.names import second_client


async def test_a_lock_waiter_gets_connection_closed_when_its_client_closes(
    jsflow_client: jsflow.Client, jsflow_bucket: str
) -> None:
    async with asyncio.timeout(20):
        # given a lock held by one client and a waiter in another client (long recheck)
        held = jsflow_client.lock("busy", ttl=30, bucket=jsflow_bucket)
        assert await held.acquire()
        other = await second_client(jsflow_client)
        waiter = other.lock("busy", ttl=30, bucket=jsflow_bucket, recheck=60)
        semaphore_holder = jsflow_client.semaphore("one", 1, ttl=30, bucket=jsflow_bucket)
        assert await semaphore_holder.acquire()
        semaphore_waiter = other.semaphore("one", 1, ttl=30, bucket=jsflow_bucket, recheck=60)
        waiting = [
            asyncio.create_task(waiter.acquire()),
            asyncio.create_task(semaphore_waiter.acquire()),
        ]
        await asyncio.sleep(0.3)
        # when the waiter's client closes
        await other.close()
        # then each waiter ends with ConnectionClosedError instead of waiting on
        for task in waiting:
            with pytest.raises(ConnectionClosedError):
                await task
        await held.release()
        await semaphore_holder.release()


async def test_a_wait_group_waiter_gets_connection_closed_when_its_client_closes(
    jsflow_client: jsflow.Client, jsflow_bucket: str
) -> None:
    async with asyncio.timeout(20):
        await jsflow_client.wait_group("g", bucket=jsflow_bucket).add(1)
        other = await second_client(jsflow_client)
        pending = asyncio.create_task(
            other.wait_group("g", bucket=jsflow_bucket, recheck=60).wait()
        )
        await asyncio.sleep(0.3)
        await other.close()
        with pytest.raises(ConnectionClosedError):
            await pending


async def test_closing_the_client_releases_held_leases(
    jsflow_server: EmbeddedServer, jsflow_client: Client, jsflow_bucket: str
) -> None:
    # given a client holding a lock, a permit and a leadership with long leases
    doomed = await jsflow.connect(jsflow_server.url)
    lock = doomed.lock("res", ttl=60, bucket=jsflow_bucket)
    sem = doomed.semaphore("pool", 1, ttl=60, bucket=jsflow_bucket)
    election = doomed.election("sched", ttl=60, bucket=jsflow_bucket)
    assert await lock.acquire() and await sem.acquire() and await election.campaign()
    # when the client closes without releasing them
    await doomed.close()
    # then they are free at once, not after their ttl
    assert await jsflow_client.lock("res", ttl=5, bucket=jsflow_bucket).acquire(blocking=False)
    assert await jsflow_client.semaphore("pool", 1, ttl=5, bucket=jsflow_bucket).acquire(
        blocking=False
    )
    assert await jsflow_client.election("sched", ttl=5, bucket=jsflow_bucket).campaign(timeout=0)
    assert not lock.held and not sem.held and not election.is_leader


async def test_released_lease_is_unregistered_from_client_close(
    jsflow_client: Client, jsflow_bucket: str
) -> None:
    # given a lock acquired and released
    lock = jsflow_client.lock("res", ttl=5, bucket=jsflow_bucket)
    async with lock:
        assert lock in jsflow_client._closers.values()
    # then the client no longer holds on to it
    assert lock not in jsflow_client._closers.values()


async def test_off_close_forgets_a_closer(jsflow_client: Client) -> None:
    # given two objects registered to be closed with the client
    closed: list[str] = []

    class Closer:
        def __init__(self, name: str) -> None:
            self.name = name

        async def aclose(self) -> None:
            closed.append(self.name)

    kept, dropped = Closer("kept"), Closer("dropped")
    jsflow_client.on_close(kept)
    jsflow_client.on_close(dropped)
    # when one is unregistered (twice: the second is a no-op) and the client closes
    jsflow_client.off_close(dropped)
    jsflow_client.off_close(dropped)
    await jsflow_client.close()
    # then only the other one was closed, once
    assert closed == ["kept"]
