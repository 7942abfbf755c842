"""Lock: mutual exclusion across clients, fencing, expiry (fractional TTLs included), loss,
waiting (across processes: system/test_processes.py)."""

from __future__ import annotations

import asyncio

import pytest

import jsflow
from jsflow._proto.common_pb2 import Lease
from jsflow.client import Client
from jsflow.server import EmbeddedServer
from tests.support.names import second_client


async def test_lock_acquire_and_release_round_trip(
    jsflow_client: Client, jsflow_bucket: str
) -> None:
    # given a free lock
    lock = jsflow_client.lock("jobs.nightly", ttl=5, bucket=jsflow_bucket)
    # when it is acquired
    assert await lock.acquire()
    # then it is held, with a token, and the server shows this holder
    assert lock.held and lock.locked
    assert lock.fencing_token > 0
    holder = await lock.holder()
    assert holder is not None and holder.owner == lock.owner
    # and after release it is free again
    await lock.release()
    assert not lock.held
    assert await lock.holder() is None


async def test_second_client_cannot_take_held_lock(
    jsflow_server: EmbeddedServer, jsflow_client: Client, jsflow_bucket: str
) -> None:
    # given a lock held by one client
    async with await jsflow.connect(jsflow_server.url) as other:
        first = jsflow_client.lock("res", ttl=5, bucket=jsflow_bucket)
        second = other.lock("res", ttl=5, bucket=jsflow_bucket)
        async with first:
            # when another client tries without blocking, or with a short timeout
            # then it does not get it
            assert not await second.acquire(blocking=False)
            assert not await second.acquire(timeout=0.2)
        # and once released it does, with a larger fencing token
        assert await second.acquire(blocking=False)
        assert second.fencing_token > first.fencing_token
        await second.release()


async def test_waiter_wakes_promptly_on_release(
    jsflow_server: EmbeddedServer, jsflow_client: Client, jsflow_bucket: str
) -> None:
    # given a holder and a waiter in another client whose safety-net recheck is far away
    async with await jsflow.connect(jsflow_server.url) as other:
        holder = jsflow_client.lock("res", ttl=60, bucket=jsflow_bucket)
        waiter = other.lock("res", ttl=60, bucket=jsflow_bucket)
        await holder.acquire()
        waiting = asyncio.create_task(waiter.acquire(timeout=20))
        await asyncio.sleep(0.2)
        assert not waiting.done()
        # when the holder releases
        await holder.release()
        # then the waiter gets the lock long before any recheck (woken by the watch)
        assert await asyncio.wait_for(waiting, 10)
        await waiter.release()


async def test_dead_holder_lease_expires_on_server(
    jsflow_server: EmbeddedServer, jsflow_client: Client, jsflow_bucket: str
) -> None:
    # given a holder whose client dies without releasing
    doomed = await jsflow.connect(jsflow_server.url)
    dead = doomed.lock("res", ttl=1, bucket=jsflow_bucket, auto_renew=False)
    assert await dead.acquire()
    await doomed.nc.close()
    # when another client waits for the lock
    alive = jsflow_client.lock("res", ttl=5, bucket=jsflow_bucket, recheck=30)
    # then it gets it once the server expired the lease (woken by the expiry marker)
    assert await alive.acquire(timeout=10)
    assert alive.fencing_token > dead.fencing_token
    await alive.release()
    await doomed.close()


async def test_renewal_keeps_lease_past_its_ttl(
    jsflow_server: EmbeddedServer, jsflow_client: Client, jsflow_bucket: str
) -> None:
    # given a holder with a 2 s lease that renews itself
    lock = jsflow_client.lock("res", ttl=2, bucket=jsflow_bucket)
    await lock.acquire()
    token = lock.fencing_token
    # when more than its ttl passes
    await asyncio.sleep(3)
    # then the lease is still held and nobody else can take it
    async with await jsflow.connect(jsflow_server.url) as other:
        assert not await other.lock("res", ttl=1, bucket=jsflow_bucket).acquire(blocking=False)
    assert lock.held and not lock.lost.is_set()
    assert lock.fencing_token == token
    await lock.release()


async def test_paused_holder_loses_lease_and_cannot_delete_new_one(
    jsflow_server: EmbeddedServer, jsflow_client: Client, jsflow_bucket: str
) -> None:
    # given a holder that stops renewing (a paused process) with a 1 s lease
    paused = jsflow_client.lock("res", ttl=1, bucket=jsflow_bucket, auto_renew=False)
    await paused.acquire()
    # when its lease expires and another client takes the lock
    async with await jsflow.connect(jsflow_server.url) as other:
        successor = other.lock("res", ttl=30, bucket=jsflow_bucket)
        assert await successor.acquire(timeout=10)
        assert successor.fencing_token > paused.fencing_token
        # then the paused holder learns of the loss on renewal and on release
        with pytest.raises(jsflow.LockLostError):
            await paused.renew()
        assert paused.lost.is_set()
        assert not paused.held
        with pytest.raises(jsflow.LockLostError):
            await paused.release()
        # and the successor's lease is untouched
        holder = await successor.holder()
        assert holder is not None and holder.owner == successor.owner
        await successor.release()


async def test_renewal_sets_lost_when_lease_is_taken_away(
    jsflow_client: Client, jsflow_bucket: str
) -> None:
    # given a renewing holder
    lock = jsflow_client.lock("res", ttl=1.5, bucket=jsflow_bucket)
    await lock.acquire()
    # when an operator breaks the lock (unconditional delete)
    store = await jsflow_client.object_store(jsflow_bucket, Lease)
    await store.delete("res")
    # then the next renewal notices: lost is set and release raises LockLostError
    await asyncio.wait_for(lock.lost.wait(), 5)
    assert not lock.held
    with pytest.raises(jsflow.LockLostError):
        await lock.release()


async def test_zero_timeout_takes_a_free_lock(jsflow_client: Client, jsflow_bucket: str) -> None:
    # given a free lock, when acquired with timeout=0, then it is taken at once
    lock = jsflow_client.lock("res", ttl=5, bucket=jsflow_bucket)
    assert await lock.acquire(timeout=0)
    # and a second instance with timeout=0 gives up at once
    assert not await jsflow_client.lock("res", ttl=5, bucket=jsflow_bucket).acquire(timeout=0)
    await lock.release()


async def test_shared_instance_serializes_tasks(jsflow_client: Client, jsflow_bucket: str) -> None:
    # given one Lock instance shared by several tasks (like asyncio.Lock)
    lock = jsflow_client.lock("res", ttl=5, bucket=jsflow_bucket)
    inside = 0
    most = 0

    async def use() -> None:
        nonlocal inside, most
        async with lock:
            inside += 1
            most = max(most, inside)
            await asyncio.sleep(0.01)
            inside -= 1

    # when they all use it, then they take turns
    await asyncio.wait_for(asyncio.gather(*(use() for _ in range(5))), 30)
    assert most == 1 and not lock.held


async def test_release_without_acquire_raises_not_held(jsflow_client: Client) -> None:
    # given a lock never acquired, when released, then NotHeldError
    with pytest.raises(jsflow.NotHeldError):
        await jsflow_client.lock("never").release()


async def test_async_with_releases_on_error(jsflow_client: Client, jsflow_bucket: str) -> None:
    # given a lock used as a context manager, when the body raises
    lock = jsflow_client.lock("res", ttl=5, bucket=jsflow_bucket)
    with pytest.raises(KeyError):
        async with lock:
            raise KeyError("boom")
    # then the lock is released
    assert not lock.held
    assert await lock.holder() is None


async def test_cancelled_waiter_leaves_no_lease(jsflow_client: Client, jsflow_bucket: str) -> None:
    # given a waiter blocked behind a holder
    holder = jsflow_client.lock("res", ttl=30, bucket=jsflow_bucket)
    await holder.acquire()
    waiter = jsflow_client.lock("res", ttl=30, bucket=jsflow_bucket)
    task = asyncio.create_task(waiter.acquire())
    await asyncio.sleep(0.1)
    # when it is cancelled, then the holder is unaffected and the lock is free after release
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await holder.release()
    assert await jsflow_client.lock("res", ttl=30, bucket=jsflow_bucket).acquire(blocking=False)


async def test_thousand_waiters_cost_one_consumer(
    jsflow_server: EmbeddedServer, jsflow_client: Client, jsflow_bucket: str
) -> None:
    # given a held lock and 1,000 waiters (separate Lock objects) in one client
    holder = jsflow_client.lock("hot", ttl=30, bucket=jsflow_bucket)
    await holder.acquire()
    inside = 0
    max_inside = 0
    acquired = 0

    async def worker() -> None:
        nonlocal inside, max_inside, acquired
        lock = jsflow_client.lock("hot", ttl=30, bucket=jsflow_bucket)
        async with lock:
            inside += 1
            max_inside = max(max_inside, inside)
            acquired += 1
            inside -= 1

    tasks = [asyncio.create_task(worker()) for _ in range(1000)]
    # then, once the waiters are waiting, the bucket's stream has exactly one consumer (the
    # store's shared watch) however long we look
    counts = []
    for _ in range(100):  # bounded: up to ~10 s on a loaded machine
        await asyncio.sleep(0.1)
        info = await jsflow_client.js.stream_info(f"KV_{jsflow_bucket}")
        counts.append(info.state.consumer_count)
        if len(counts) >= 5 and counts[-5:] == [1] * 5:
            break
    assert counts[-5:] == [1] * 5 and max(counts) == 1, counts
    # when the holder releases, every waiter gets the lock in turn, one at a time
    await holder.release()
    await asyncio.wait_for(asyncio.gather(*tasks), 60)
    assert acquired == 1000 and max_inside == 1
    info = await jsflow_client.js.stream_info(f"KV_{jsflow_bucket}")
    assert info.state.consumer_count <= 1


async def test_uncontended_acquire_creates_no_consumer(
    jsflow_client: Client, jsflow_bucket: str
) -> None:
    # given a free lock, when it is taken and released a few times without contention
    for _ in range(3):
        async with jsflow_client.lock("res", ttl=5, bucket=jsflow_bucket) as lock:
            assert lock.held
    # then no watch was needed: the bucket's stream has no consumer at all
    info = await jsflow_client.js.stream_info(f"KV_{jsflow_bucket}")
    assert info.state.consumer_count == 0


async def test_waiter_registered_after_failed_first_attempt_is_woken(
    jsflow_server: EmbeddedServer, jsflow_client: Client, jsflow_bucket: str
) -> None:
    # given a holder in another client and a waiter here whose safety net is far away
    async with await jsflow.connect(jsflow_server.url) as other:
        holder = other.lock("res", ttl=60, bucket=jsflow_bucket)
        assert await holder.acquire()
        waiter = jsflow_client.lock("res", ttl=60, bucket=jsflow_bucket, recheck=60)
        waiting = asyncio.create_task(waiter.acquire(timeout=30))
        await asyncio.sleep(0.2)
        # when the holder releases
        await holder.release()
        # then the waiter (first attempt failed, then it listened) gets the lock
        assert await asyncio.wait_for(waiting, 20)
        assert waiter.fencing_token > holder.fencing_token
        await waiter.release()


async def test_cancelled_uncontended_acquire_leaves_no_lease(
    jsflow_client: Client, jsflow_bucket: str
) -> None:
    # given acquisitions of a free lock cancelled at every point of their first attempt
    for delay_steps in range(12):
        lock = jsflow_client.lock("res", ttl=30, bucket=jsflow_bucket)
        task = asyncio.create_task(lock.acquire())
        for _ in range(delay_steps):
            await asyncio.sleep(0)
        task.cancel()
        try:
            won = await task
        except asyncio.CancelledError:
            won = False
        # then either the acquisition completed, or no lease of it is left behind
        if won:
            await lock.release()
        else:
            assert not lock.held
        assert await lock.holder() is None


async def test_no_one_else_acquires_a_fractional_ttl_lock_while_its_holder_believes_it_holds(
    jsflow_client: jsflow.Client, jsflow_bucket: str
) -> None:
    async with asyncio.timeout(30):
        # given a lock with ttl=1.5 held by one client that does not renew it
        other = await second_client(jsflow_client)
        try:
            loop = asyncio.get_running_loop()
            holder = jsflow_client.lock("job", ttl=1.5, bucket=jsflow_bucket, auto_renew=False)
            started = loop.time()
            assert await holder.acquire()
            # when another client tries to take it until shortly before the holder's ttl ends
            rival = other.lock("job", ttl=1.5, bucket=jsflow_bucket)
            while loop.time() < started + 1.4:
                # then it never gets it (the server keeps the lease at least 1.5 s)
                assert not await rival.acquire(blocking=False)
                await asyncio.sleep(0.05)
            # and once the lease ran out the rival gets it, and the old holder knows it lost it
            assert await rival.acquire(timeout=10)
            assert not holder.held
            assert holder.lost.is_set()
            with pytest.raises(jsflow.LockLostError):
                await holder.release()
            await rival.release()
        finally:
            await other.close()


async def test_a_renewed_fractional_ttl_lock_stays_held(
    jsflow_client: jsflow.Client, jsflow_bucket: str
) -> None:
    async with asyncio.timeout(20):
        lock = jsflow_client.lock("renewed", ttl=1.5, bucket=jsflow_bucket)
        assert await lock.acquire()
        await asyncio.sleep(2.5)  # several renewals (every ttl/3)
        assert lock.held and not lock.lost.is_set()
        await lock.release()
