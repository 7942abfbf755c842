"""Coordination hardening: leases the server keeps as long as their holder counts on them,
bounded names, typed config errors, and waiters that end when their client closes."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from typing import Any

import pytest

import jsflow
from jsflow.errors import ConfigError, ConnectionClosedError, InvalidKeyError, InvalidNameError

LONG = "x" * 5000


async def _second_client(client: jsflow.Client) -> jsflow.Client:
    return await jsflow.connect(client.nc.connected_url.geturl())  # type: ignore[union-attr]


async def test_no_one_else_acquires_a_fractional_ttl_lock_while_its_holder_believes_it_holds(
    jsflow_client: jsflow.Client, jsflow_bucket: str
) -> None:
    async with asyncio.timeout(30):
        # given a lock with ttl=1.5 held by one client that does not renew it
        other = await _second_client(jsflow_client)
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


NAME_CALLS: dict[str, tuple[Callable[[jsflow.Client], Any], type[Exception]]] = {
    "lock": (lambda c: c.lock(LONG), InvalidKeyError),
    "lock bucket": (lambda c: c.lock("a", bucket=LONG), InvalidNameError),
    "semaphore": (lambda c: c.semaphore(LONG, 2), InvalidKeyError),
    "semaphore slot": (lambda c: c.semaphore("s" * 1023, 20), InvalidKeyError),
    "election": (lambda c: c.election(LONG), InvalidKeyError),
    "rate_limiter": (lambda c: c.rate_limiter(LONG, 5), InvalidKeyError),
    "rate_limiter bucket": (lambda c: c.rate_limiter("r", 5, bucket=LONG), InvalidNameError),
    "counter": (lambda c: c.counter(LONG), InvalidNameError),
    "counter near bound": (lambda c: c.counter("c" * 120), InvalidNameError),
    "wait_group": (lambda c: c.wait_group(LONG), InvalidKeyError),
    "wait_group bucket": (lambda c: c.wait_group("w", bucket=LONG), InvalidNameError),
}


@pytest.mark.parametrize("call", sorted(NAME_CALLS))
async def test_an_oversized_coordination_name_fails_before_io_and_the_client_stays_usable(
    jsflow_client: jsflow.Client, jsflow_bucket: str, call: str
) -> None:
    async with asyncio.timeout(15):
        make, error = NAME_CALLS[call]
        with pytest.raises(error):
            make(jsflow_client)
        async with jsflow_client.lock("after", ttl=5, bucket=jsflow_bucket) as lock:
            assert lock.held


async def test_an_oversized_rate_limiter_key_fails_before_io(
    jsflow_client: jsflow.Client, jsflow_bucket: str
) -> None:
    async with asyncio.timeout(15):
        limiter = jsflow_client.rate_limiter("api", 5, bucket=jsflow_bucket)
        for key in (LONG, "k" * 1021):  # the stored key is "api.<key>": bounded as a whole
            with pytest.raises(InvalidKeyError):
                await limiter.try_acquire(key)
        assert (await limiter.try_acquire("fine")).allowed


CONFIG_CALLS: dict[str, tuple[Callable[[jsflow.Client], Any], str]] = {
    "lock ttl str": (lambda c: c.lock("a", ttl="10"), "ttl"),
    "lock ttl 0": (lambda c: c.lock("a", ttl=0), "ttl"),
    "lock ttl nan": (lambda c: c.lock("a", ttl=math.nan), "ttl"),
    "lock ttl under 1": (lambda c: c.lock("a", ttl=0.5), "ttl"),
    "lock recheck str": (lambda c: c.lock("a", recheck="1"), "recheck"),
    "semaphore permits 0": (lambda c: c.semaphore("s", 0), "permits"),
    "semaphore permits str": (lambda c: c.semaphore("s", "2"), "permits"),
    "election ttl inf": (lambda c: c.election("e", ttl=math.inf), "ttl"),
    "rate 0": (lambda c: c.rate_limiter("r", 0), "rate"),
    "rate str": (lambda c: c.rate_limiter("r", "5"), "rate"),
    "rate inf": (lambda c: c.rate_limiter("r", math.inf), "rate"),
    "per nan": (lambda c: c.rate_limiter("r", 5, per=math.nan), "per"),
    "burst str": (lambda c: c.rate_limiter("r", 5, burst="3"), "burst"),
    "counter replicas str": (lambda c: c.counter("c", replicas="3"), "replicas"),
    "wait_group recheck 0": (lambda c: c.wait_group("w", recheck=0), "recheck"),
}


@pytest.mark.parametrize("call", sorted(CONFIG_CALLS))
def test_bad_coordination_options_raise_config_error_naming_them(
    jsflow_client: jsflow.Client, call: str
) -> None:
    make, parameter = CONFIG_CALLS[call]
    with pytest.raises(ConfigError, match=parameter):
        make(jsflow_client)


async def test_bad_call_arguments_raise_config_error_before_io(
    jsflow_client: jsflow.Client, jsflow_bucket: str
) -> None:
    async with asyncio.timeout(15):
        counter = jsflow_client.counter(f"c{jsflow_bucket[-8:]}")
        with pytest.raises(ConfigError, match="n"):
            await counter.add("k", n="1")  # type: ignore[arg-type]
        with pytest.raises(ConfigError, match="n"):
            await counter.add("k", n=10**400)
        group = jsflow_client.wait_group("g", bucket=jsflow_bucket)
        with pytest.raises(ConfigError, match="n"):
            await group.add("1")  # type: ignore[arg-type]
        lock = jsflow_client.lock("a", bucket=jsflow_bucket)
        with pytest.raises(ConfigError, match="timeout"):
            await lock.acquire(timeout="1")  # type: ignore[arg-type]
        limiter = jsflow_client.rate_limiter("r", 5, bucket=jsflow_bucket)
        with pytest.raises(ConfigError, match="cost"):
            await limiter.try_acquire("k", cost="1")  # type: ignore[arg-type]
        with pytest.raises(ConfigError, match="timeout"):
            await limiter.acquire("k", timeout=math.nan)
        assert await group.count() == 0
        assert await counter.get("k") == 0


async def test_a_lock_waiter_gets_connection_closed_when_its_client_closes(
    jsflow_client: jsflow.Client, jsflow_bucket: str
) -> None:
    async with asyncio.timeout(20):
        # given a lock held by one client and a waiter in another client (long recheck)
        held = jsflow_client.lock("busy", ttl=30, bucket=jsflow_bucket)
        assert await held.acquire()
        other = await _second_client(jsflow_client)
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
        other = await _second_client(jsflow_client)
        pending = asyncio.create_task(
            other.wait_group("g", bucket=jsflow_bucket, recheck=60).wait()
        )
        await asyncio.sleep(0.3)
        await other.close()
        with pytest.raises(ConnectionClosedError):
            await pending
