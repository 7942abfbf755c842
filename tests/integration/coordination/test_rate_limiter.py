"""RateLimiter: GCRA and sliding window on a real server, never over-admitting (the
algorithms alone: unit/test_rate_limit_algorithms.py)."""

from __future__ import annotations

import asyncio
import time

import pytest

import jsflow
from jsflow._proto.rate_limiter_pb2 import RateLimitState
from jsflow.coordination.rate_limiter import Decision, RateLimiter
from tests.support.limits import FakeClock, assert_never_over_admits
from tests.support.names import uniq

ALGORITHMS = ["gcra", "sliding_window"]


@pytest.mark.parametrize("algorithm", ALGORITHMS)
async def test_decision_reports_allowed_remaining_and_retry_after(
    jsflow_client: jsflow.Client, algorithm: str
) -> None:
    # given 1 unit per second with bursts of 3, on a clock the test controls
    clock = FakeClock()
    limiter = jsflow_client.rate_limiter(uniq("rl"), 1.0, burst=3, algorithm=algorithm, clock=clock)
    # when a key takes its whole burst
    decisions = [await limiter.try_acquire("user-1") for _ in range(3)]
    # then each is allowed and counts down what remains
    assert decisions == [Decision(True, 2, 0.0), Decision(True, 1, 0.0), Decision(True, 0, 0.0)]
    # and the next is denied with the time until a unit frees up
    denied = await limiter.try_acquire("user-1")
    assert not denied.allowed
    assert denied.remaining == 0
    expected_wait = 1.0 if algorithm == "gcra" else 3.0  # window: the oldest unit ages out
    assert denied.retry_after == pytest.approx(expected_wait)
    # and another key is not affected
    assert (await limiter.try_acquire("user-2")).allowed


@pytest.mark.parametrize("algorithm", ALGORITHMS)
async def test_denied_key_is_admitted_once_retry_after_has_passed(
    jsflow_client: jsflow.Client, algorithm: str
) -> None:
    # given a key at its limit
    clock = FakeClock()
    limiter = jsflow_client.rate_limiter(uniq("rl"), 2.0, burst=2, algorithm=algorithm, clock=clock)
    assert (await limiter.try_acquire("k", cost=2)).allowed
    denied = await limiter.try_acquire("k")
    assert not denied.allowed and denied.retry_after > 0
    # when less than retry_after passes, then it is still denied
    clock.advance(denied.retry_after * 0.9)
    assert not (await limiter.try_acquire("k")).allowed
    # when retry_after has passed, then it is admitted
    clock.advance(denied.retry_after * 0.1)
    assert (await limiter.try_acquire("k")).allowed


async def test_limit_is_shared_by_every_client(
    jsflow_server: jsflow.EmbeddedServer, jsflow_client: jsflow.Client
) -> None:
    # given two clients (two processes, as far as the server can tell) limiting one key
    clock = FakeClock()
    name = uniq("rl")
    async with await jsflow.connect(jsflow_server.url) as other:
        mine = jsflow_client.rate_limiter(name, 1.0, per=10.0, burst=4, clock=clock)
        theirs = other.rate_limiter(name, 1.0, per=10.0, burst=4, clock=clock)
        # when both take turns
        results = []
        for limiter in (mine, theirs, mine, theirs, mine, theirs):
            results.append((await limiter.try_acquire("shared")).allowed)
    # then together they get the burst of 4, not 4 each
    assert results == [True, True, True, True, False, False]


@pytest.mark.parametrize("algorithm", ALGORITHMS)
async def test_concurrent_callers_in_several_clients_never_over_admit(
    jsflow_server: jsflow.EmbeddedServer, algorithm: str
) -> None:
    # given three clients with eight concurrent callers each on one key, for a second
    rate, per, burst = 30.0, 1.0, 5
    name = uniq("rl")
    admissions: list[tuple[float, int]] = []
    slack = 0.0
    clients = [await jsflow.connect(jsflow_server.url) for _ in range(3)]
    try:
        limiters = [
            c.rate_limiter(name, rate, per=per, burst=burst, algorithm=algorithm) for c in clients
        ]
        stop = time.time() + 1.0

        async def caller(limiter: RateLimiter, cost: int) -> None:
            nonlocal slack
            while time.time() < stop:
                before = time.time()
                decision = await limiter.try_acquire("hot", cost=cost)
                after = time.time()
                if decision.allowed:
                    # the decision was taken at some instant in [before, after]
                    slack = max(slack, after - before)
                    admissions.append((after, cost))
                else:
                    await asyncio.sleep(min(decision.retry_after, 0.01))

        # when they all hammer it at once, with costs of 1 and 2
        await asyncio.gather(
            *(caller(limiter, 1 + i % 2) for limiter in limiters for i in range(8))
        )
    finally:
        for c in clients:
            await c.close()
    # then admissions are close to the limit but no window ever holds more
    assert sum(cost for _, cost in admissions) >= burst
    assert_never_over_admits(admissions, rate, per, burst, slack=slack)


async def test_acquire_waits_its_turn_and_succeeds(jsflow_client: jsflow.Client) -> None:
    # given 20 units per second with bursts of 2
    rate, burst = 20.0, 2
    limiter = jsflow_client.rate_limiter(uniq("rl"), rate, burst=burst)
    started = time.monotonic()
    # when 12 callers acquire at once
    decisions = await asyncio.wait_for(
        asyncio.gather(*(limiter.acquire("q", timeout=5.0) for _ in range(12))), timeout=10
    )
    elapsed = time.monotonic() - started
    # then all are admitted, and no faster than the rate allows after the burst
    assert all(d.allowed for d in decisions)
    assert elapsed >= (12 - burst) / rate - 0.02


async def test_acquire_raises_rate_limit_exceeded_when_timeout_is_too_short(
    jsflow_client: jsflow.Client,
) -> None:
    # given a key that frees a unit only every 10 seconds, and has just used it
    name = uniq("rl")
    limiter = jsflow_client.rate_limiter(name, 1.0, per=10.0, burst=1)
    await limiter.acquire("slow")
    # when acquiring with a one-second timeout
    with pytest.raises(jsflow.RateLimitExceeded) as info:
        await asyncio.wait_for(limiter.acquire("slow", timeout=1.0), timeout=5)
    # then it fails at once, saying how long to wait, and reserved nothing
    assert info.value.name == name and info.value.key == "slow"
    assert 8.0 < info.value.retry_after <= 10.0
    assert not (await limiter.try_acquire("slow")).allowed
    with pytest.raises(jsflow.RateLimitExceeded):
        await limiter.acquire("slow", timeout=0)


async def test_acquire_reservations_block_later_try_acquire(jsflow_client: jsflow.Client) -> None:
    # given a key whose burst is used, and a caller waiting in acquire for the next unit
    clock = FakeClock()
    limiter = jsflow_client.rate_limiter(uniq("rl"), 1.0, per=0.2, burst=1, clock=clock)
    assert (await limiter.try_acquire("k")).allowed
    waiter = asyncio.create_task(limiter.acquire("k", timeout=5))
    await asyncio.sleep(0.05)  # let the reservation be written
    # when another caller tries before the reserved time
    clock.advance(0.1)
    # then the reserved unit is not given away twice
    assert not (await limiter.try_acquire("k")).allowed
    assert (await asyncio.wait_for(waiter, timeout=5)).allowed


async def test_reset_restores_the_full_burst(jsflow_client: jsflow.Client) -> None:
    # given a key at its limit
    limiter = jsflow_client.rate_limiter(uniq("rl"), 1.0, per=60.0, burst=2)
    await limiter.try_acquire("k", cost=2)
    assert not (await limiter.try_acquire("k")).allowed
    # when it is reset, then it admits a full burst again
    await limiter.reset("k")
    assert (await limiter.try_acquire("k", cost=2)).allowed


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        ((0,), {}),
        ((-1.0,), {}),
        ((float("inf"),), {}),
        (("10",), {}),
        ((10,), {"per": 0}),
        ((10,), {"per": -1.0}),
        ((10,), {"burst": 0}),
        ((10,), {"burst": 2.5}),
        ((10,), {"burst": True}),
        ((10,), {"algorithm": "leaky"}),
        ((10,), {"algorithm": "sliding_window", "burst": 10**6}),
    ],
)
async def test_bad_limiter_settings_raise_config_error(
    jsflow_client: jsflow.Client, args: tuple[object, ...], kwargs: dict[str, object]
) -> None:
    with pytest.raises(jsflow.ConfigError):
        jsflow_client.rate_limiter("ok", *args, **kwargs)  # type: ignore[arg-type]


async def test_bad_names_keys_and_costs_raise_before_any_io(
    jsflow_server: jsflow.EmbeddedServer,
) -> None:
    # given a limiter whose client is already closed (any I/O would fail differently)
    client = await jsflow.connect(jsflow_server.url)
    await client.close()
    with pytest.raises(jsflow.InvalidKeyError):
        client.rate_limiter("bad name", 1.0)
    client.rate_limiter("a.b", 1.0)  # a dotted name is legal (escaped into one token)
    limiter = client.rate_limiter("fine", 10.0, burst=3)
    # when called with bad input, then the typed error comes first
    with pytest.raises(jsflow.InvalidKeyError):
        await limiter.try_acquire("user.*")
    with pytest.raises(jsflow.InvalidKeyError):
        await limiter.acquire("")
    with pytest.raises(jsflow.ConfigError):
        await limiter.try_acquire("k", cost=0)
    with pytest.raises(jsflow.ConfigError, match="exceeds burst"):
        await limiter.try_acquire("k", cost=4)
    with pytest.raises(jsflow.ConfigError):
        await limiter.acquire("k", timeout=-1)


async def test_sliding_window_admits_burst_per_period(jsflow_client: jsflow.Client) -> None:
    # given a sliding window of 3 per 3 seconds
    clock = FakeClock()
    limiter = jsflow_client.rate_limiter(
        uniq("rl"), 1.0, burst=3, algorithm="sliding_window", clock=clock
    )
    # when admissions come at t=0, 1, 2
    for _ in range(3):
        assert (await limiter.try_acquire("k")).allowed
        clock.advance(1.0)
    # then at t=3 the unit from t=0 has aged out, but not the one from t=1
    assert (await limiter.try_acquire("k")).allowed
    denied = await limiter.try_acquire("k")
    assert not denied.allowed
    assert denied.retry_after == pytest.approx(1.0)


async def test_key_state_lives_in_the_shared_bucket_under_name_and_key(
    jsflow_client: jsflow.Client,
) -> None:
    # given a limiter that has admitted once
    name = uniq("rl")
    limiter = jsflow_client.rate_limiter(name, 100.0, burst=1)
    await limiter.try_acquire("k")
    # then its state sits in the shared bucket under <name>.<key>
    store = await jsflow_client.object_store("jsflow_rate_limits", RateLimitState)
    entry = await store.get(f"{name}.k")
    assert entry is not None and entry.value.tat_ns > 0


async def test_acquire_without_timeout_still_writes_state_that_expires(
    jsflow_client: jsflow.Client,
) -> None:
    # given a limiter (its state must expire once idle: a write without a TTL lives forever)
    name = uniq("rl")
    limiter = jsflow_client.rate_limiter(name, 100.0, burst=5)
    # when a unit is acquired with no timeout at all
    assert (await limiter.acquire("k")).allowed
    # then the stored state still carries a finite per-key TTL
    msg = await jsflow_client.js.get_msg(
        "KV_jsflow_rate_limits", subject=f"$KV.jsflow_rate_limits.{name}.k", direct=True
    )
    assert msg.headers is not None and "Nats-TTL" in msg.headers


async def test_known_keys_are_still_validated_and_cost_checked(
    jsflow_client: jsflow.Client,
) -> None:
    # given a limiter that has already decided for a key (its fast path skips re-validation)
    limiter = jsflow_client.rate_limiter(uniq("rl"), 100.0, burst=2)
    assert (await limiter.try_acquire("k")).allowed
    # then bad costs on that key, and bad keys, are still typed errors
    with pytest.raises(jsflow.ConfigError, match="exceeds burst"):
        await limiter.try_acquire("k", cost=3)
    with pytest.raises(jsflow.ConfigError):
        await limiter.try_acquire("k", cost=True)
    with pytest.raises(jsflow.InvalidKeyError):
        await limiter.try_acquire("k.*")
