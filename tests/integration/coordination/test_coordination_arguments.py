"""Coordination names, options and call arguments: an oversized name or key, or a wrong-typed
option, fails with a typed error naming it before any I/O, and the client stays usable."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from typing import Any

import pytest

import jsflow
from jsflow.errors import ConfigError, InvalidKeyError, InvalidNameError

LONG = "x" * 5000


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
