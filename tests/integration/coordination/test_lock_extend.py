"""extend(): lengthening a held lease (Lock, semaphore permit, leadership) by a compare-and-set
that keeps the fencing token, as redis-py's Lock.extend; the server's per-key TTL follows."""

from __future__ import annotations

import asyncio

import pytest

import jsflow
from jsflow._proto.common_pb2 import Lease
from jsflow.client import Client
from jsflow.coordination.lock import Lock
from tests.support.names import second_client


async def server_ttl(client: Client, bucket: str, key: str) -> int:
    """The whole seconds of the ``Nats-TTL`` header the server stores with ``key``."""
    msg = await client.js.get_msg(f"KV_{bucket}", subject=f"$KV.{bucket}.{key}", direct=True)
    assert msg.headers is not None
    header = msg.headers["Nats-TTL"]
    assert header.endswith("s")
    return int(header[:-1])


async def test_extend_adds_to_the_remaining_lease_and_keeps_the_token(
    jsflow_client: Client, jsflow_bucket: str
) -> None:
    # given a held lock of 5 s that does not renew itself
    lock = jsflow_client.lock("res", ttl=5, bucket=jsflow_bucket, auto_renew=False)
    assert await lock.acquire()
    token = lock.fencing_token
    assert await server_ttl(jsflow_client, jsflow_bucket, "res") == 5
    # when 30 s are added
    await lock.extend(30)
    # then the server keeps the key for what remained plus 30 s (rounded up to whole seconds)
    assert 33 <= await server_ttl(jsflow_client, jsflow_bucket, "res") <= 35
    # and the fencing token, the owner and the holding are unchanged
    assert lock.fencing_token == token
    holder = await lock.holder()
    assert holder is not None and holder.owner == lock.owner and holder.fencing_token == token
    assert lock.held
    await lock.release()
    assert await lock.holder() is None


async def test_extend_with_replace_ttl_makes_the_lease_that_long_from_now(
    jsflow_client: Client, jsflow_bucket: str
) -> None:
    # given a held lock of 30 s
    lock = jsflow_client.lock("res", ttl=30, bucket=jsflow_bucket, auto_renew=False)
    assert await lock.acquire()
    token = lock.fencing_token
    # when its lease is replaced by 3 s from now (shorter), then the server keeps 3 s
    await lock.extend(3, replace_ttl=True)
    assert await server_ttl(jsflow_client, jsflow_bucket, "res") == 3
    # and replaced by 60 s (longer), then 60 s
    await lock.extend(60, replace_ttl=True)
    assert await server_ttl(jsflow_client, jsflow_bucket, "res") == 60
    assert lock.fencing_token == token and lock.held
    await lock.release()


async def test_an_extended_lease_outlives_its_original_ttl(
    jsflow_client: Client, jsflow_bucket: str
) -> None:
    # given a 1 s lease, not renewed, extended by 5 s
    lock = jsflow_client.lock("res", ttl=1, bucket=jsflow_bucket, auto_renew=False)
    assert await lock.acquire()
    await lock.extend(5)
    # when more than the original ttl passes (the server frees a 1 s TTL within ~2.6 s)
    await asyncio.sleep(3)
    # then this holder still holds it, nobody else can take it, and release deletes it
    assert lock.held and not lock.lost.is_set()
    other = await second_client(jsflow_client)
    try:
        assert not await other.lock("res", ttl=1, bucket=jsflow_bucket).acquire(blocking=False)
    finally:
        await other.close()
    await lock.release()
    assert await lock.holder() is None


async def test_renewal_never_shortens_an_extended_lease(
    jsflow_client: Client, jsflow_bucket: str
) -> None:
    # given a lease of 2 s extended to about 22 s
    lock = jsflow_client.lock("res", ttl=2, bucket=jsflow_bucket, auto_renew=False)
    assert await lock.acquire()
    await lock.extend(20)
    # when it is renewed (what auto_renew does every ttl / 3)
    await lock.renew()
    # then the renewal kept what remained instead of cutting it back to the 2 s ttl
    assert await server_ttl(jsflow_client, jsflow_bucket, "res") >= 20
    await lock.release()


async def test_auto_renewal_keeps_an_extension(jsflow_client: Client, jsflow_bucket: str) -> None:
    # given a renewing 1.5 s lease (renewed every 0.5 s) extended by 30 s
    lock = jsflow_client.lock("res", ttl=1.5, bucket=jsflow_bucket)
    assert await lock.acquire()
    token = lock.fencing_token
    await lock.extend(30)
    # when several renewals run
    await asyncio.sleep(1.6)
    # then the lease is still far longer than the ttl, with the same token
    assert await server_ttl(jsflow_client, jsflow_bucket, "res") > 10
    assert lock.held and lock.fencing_token == token
    await lock.release()


async def test_concurrent_extensions_of_one_holder_all_apply(
    jsflow_client: Client, jsflow_bucket: str
) -> None:
    # given a held 5 s lease
    lock = jsflow_client.lock("res", ttl=5, bucket=jsflow_bucket, auto_renew=False)
    assert await lock.acquire()
    # when five tasks extend it by 10 s each at once (each a compare-and-set on the last)
    await asyncio.gather(*(lock.extend(10) for _ in range(5)))
    # then none conflicted with another, and all 50 s were added
    assert 53 <= await server_ttl(jsflow_client, jsflow_bucket, "res") <= 55
    assert lock.held
    await lock.release()


async def test_extend_raises_lock_lost_when_the_lease_was_taken_over(
    jsflow_client: Client, jsflow_bucket: str
) -> None:
    # given a held lease that an operator breaks, and a successor that takes it
    lock = jsflow_client.lock("res", ttl=30, bucket=jsflow_bucket, auto_renew=False)
    assert await lock.acquire()
    store = await jsflow_client.object_store(jsflow_bucket, Lease)
    await store.delete("res")
    successor = jsflow_client.lock("res", ttl=30, bucket=jsflow_bucket)
    assert await successor.acquire(blocking=False)
    # when the old holder tries to extend, then it learns it lost the lease
    with pytest.raises(jsflow.LockLostError):
        await lock.extend(10)
    assert lock.lost.is_set() and not lock.held
    # and the successor's lease is untouched
    holder = await successor.holder()
    assert holder is not None and holder.owner == successor.owner
    with pytest.raises(jsflow.LockLostError):
        await lock.release()
    await successor.release()


async def test_extend_raises_lock_lost_once_the_lease_ran_out(
    jsflow_client: Client, jsflow_bucket: str
) -> None:
    # given a 1 s lease that is not renewed
    lock = jsflow_client.lock("res", ttl=1, bucket=jsflow_bucket, auto_renew=False)
    assert await lock.acquire()
    # when it runs out (the holder marks it lost at its deadline)
    await asyncio.wait_for(lock.lost.wait(), 10)
    # then it cannot be extended back to life
    with pytest.raises(jsflow.LockLostError):
        await lock.extend(30)
    with pytest.raises(jsflow.LockLostError):
        await lock.release()


async def test_extend_raises_not_held_before_acquire_and_after_release(
    jsflow_client: Client, jsflow_bucket: str
) -> None:
    lock = jsflow_client.lock("res", ttl=5, bucket=jsflow_bucket)
    # given a lock never acquired, then extend says it is not held
    with pytest.raises(jsflow.NotHeldError):
        await lock.extend(5)
    # and after a release too
    assert await lock.acquire()
    await lock.release()
    with pytest.raises(jsflow.NotHeldError):
        await lock.extend(5)


async def test_a_semaphore_permit_can_be_extended(
    jsflow_client: Client, jsflow_bucket: str
) -> None:
    # given a held permit of a 2-permit semaphore
    sem = jsflow_client.semaphore("pool", 2, ttl=5, bucket=jsflow_bucket, auto_renew=False)
    assert await sem.acquire()
    token = sem.fencing_token
    assert sem.slot is not None
    # when it is extended, then its slot key lives longer and the token stays
    await sem.extend(20)
    assert 23 <= await server_ttl(jsflow_client, jsflow_bucket, sem.slot) <= 25
    assert sem.fencing_token == token and sem.held
    await sem.release()


async def test_a_leadership_can_be_extended(jsflow_client: Client, jsflow_bucket: str) -> None:
    # given a leader
    election = jsflow_client.election("sched", ttl=5, bucket=jsflow_bucket)
    assert await election.campaign(timeout=5)
    term = election.term
    # when its leadership lease is extended, then it lives longer in the same term
    await election.extend(20)
    assert await server_ttl(jsflow_client, jsflow_bucket, "sched") >= 20
    assert election.is_leader and election.term == term
    assert await election.leader() == election.candidate_id
    await election.resign()


@pytest.mark.parametrize(
    ("additional", "replace_ttl"),
    [
        (0, False),
        (-1, False),
        (float("nan"), False),
        (float("inf"), False),
        (1e12, False),
        (True, False),
        ("5", False),
        (None, False),
        (0.5, True),
        (5, "yes"),
    ],
)
async def test_bad_additional_raises_config_error_before_any_io(
    additional: object, replace_ttl: object
) -> None:
    # given a lock on a client that was never connected: any I/O would fail differently
    lock = Lock(object.__new__(Client), "res", ttl=5)
    # when extended by a bad amount, then ConfigError names it, before the held check
    with pytest.raises(jsflow.ConfigError):
        await lock.extend(additional, replace_ttl=replace_ttl)  # type: ignore[arg-type]
