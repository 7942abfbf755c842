"""RateLimiter's fixed window: at most ``burst`` units per aligned window of ``per`` seconds,
on a real server with an injected clock (no timing assertions), never over-admitting under
concurrency; the step alone as a hypothesis property."""

from __future__ import annotations

import asyncio
import math
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import jsflow
from jsflow._proto.rate_limiter_pb2 import RateLimitState
from jsflow.client import Client
from jsflow.coordination.rate_limiter import Decision, RateLimiter, _fixed_window_step
from tests.support.limits import FakeClock
from tests.support.names import second_client, uniq

BUCKET = "jsflow_rate_limits"


def fixed(client: Client, name: str, clock: FakeClock) -> RateLimiter:
    """A fixed-window limiter of 3 units per 10 s (burst defaults to floor(rate))."""
    return client.rate_limiter(name, 3, per=10.0, algorithm="fixed_window", clock=clock)


async def stored(client: Client, name: str, key: str) -> RateLimitState | None:
    store = await client.object_store(BUCKET, RateLimitState)
    entry = await store.get(f"{name}.{key}")
    return None if entry is None else entry.value


async def test_burst_is_admitted_per_aligned_window(jsflow_client: Client) -> None:
    # given 3 units per window of 10 s, 3 s into a window
    clock = FakeClock(1_000_003.0)
    limiter = fixed(jsflow_client, uniq("fw"), clock)
    assert limiter.burst == 3
    # when the key takes its burst, then each call counts down what remains
    decisions = [await limiter.try_acquire("k") for _ in range(3)]
    assert decisions == [Decision(True, 2, 0.0), Decision(True, 1, 0.0), Decision(True, 0, 0.0)]
    # and the next waits for the window's end, not a rolling period
    denied = await limiter.try_acquire("k")
    assert not denied.allowed and denied.remaining == 0
    assert denied.retry_after == pytest.approx(7.0)
    # when the next window starts, then a whole burst is admitted again at once
    clock.advance(7.0)
    assert [(await limiter.try_acquire("k")).allowed for _ in range(4)] == [True] * 3 + [False]


async def test_denied_key_is_admitted_exactly_when_the_window_turns(
    jsflow_client: Client,
) -> None:
    # given a key at its limit
    clock = FakeClock(1_000_001.5)
    limiter = fixed(jsflow_client, uniq("fw"), clock)
    assert (await limiter.try_acquire("k", cost=3)).allowed
    denied = await limiter.try_acquire("k")
    # when just before retry_after, then it is still denied
    clock.advance(denied.retry_after * 0.9)
    assert not (await limiter.try_acquire("k")).allowed
    # when retry_after has passed, then it is admitted
    clock.advance(denied.retry_after * 0.1)
    assert (await limiter.try_acquire("k")).allowed


async def test_state_holds_the_window_index_and_count(jsflow_client: Client) -> None:
    # given two admissions 4 s into window 100_000 of 10 s
    clock = FakeClock(1_000_004.0)
    name = uniq("fw")
    limiter = fixed(jsflow_client, name, clock)
    await limiter.try_acquire("k")
    await limiter.try_acquire("k", cost=2)
    # then the key's state is that window's index and its count, nothing else
    state = await stored(jsflow_client, name, "k")
    assert state is not None
    assert (state.fixed_window, state.fixed_count) == (100_000, 3)
    assert state.tat_ns == 0 and not state.window


async def test_peek_tells_without_taking(jsflow_client: Client) -> None:
    # given a key with one unit used
    clock = FakeClock()
    name = uniq("fw")
    limiter = fixed(jsflow_client, name, clock)
    assert (await limiter.try_acquire("k")).allowed
    store = await jsflow_client.object_store(BUCKET, RateLimitState)
    before = await store.get(f"{name}.k")
    # when peeked at, then it says what a take would, and takes nothing
    assert await limiter.peek("k") == Decision(True, 1, 0.0)
    assert await limiter.peek("k", cost=2) == Decision(True, 0, 0.0)
    after = await store.get(f"{name}.k")
    assert before is not None and after is not None and after.revision == before.revision
    assert await limiter.try_acquire("k", cost=2) == Decision(True, 0, 0.0)
    # and a peek at a full window reports the wait until the window turns
    clock.advance(2.5)
    full = await limiter.peek("k")
    assert not full.allowed and full.remaining == 0
    assert full.retry_after == pytest.approx(7.5)
    # and an unknown key a full burst
    assert await limiter.peek("fresh", cost=3) == Decision(True, 0, 0.0)


async def test_acquire_reserves_the_next_window_and_blocks_later_tries(
    jsflow_client: Client,
) -> None:
    # given a window of 0.2 s whose only unit is used, and a caller waiting for the next
    clock = FakeClock(1_000_000.05)
    limiter = jsflow_client.rate_limiter(
        uniq("fw"), 1, per=0.2, algorithm="fixed_window", clock=clock
    )
    assert (await limiter.try_acquire("k")).allowed
    waiter = asyncio.create_task(limiter.acquire("k", timeout=5))
    await asyncio.sleep(0.05)  # let the reservation be written
    # when another caller tries in the next window, reserved for the waiter
    clock.advance(0.2)
    # then the reserved unit is not given away twice
    assert not (await limiter.try_acquire("k")).allowed
    assert (await asyncio.wait_for(waiter, timeout=5)).allowed


async def test_a_host_whose_clock_lags_admits_nothing_more(jsflow_client: Client) -> None:
    # given a host 5 s ahead that used the whole burst of the window its clock is in
    name = uniq("fw")
    ahead = fixed(jsflow_client, name, FakeClock(1_000_012.0))
    assert (await ahead.try_acquire("k", cost=3)).allowed
    # when a host whose clock is still in the previous (unused) window asks
    behind = fixed(jsflow_client, name, FakeClock(1_000_007.0))
    # then it counts the later window in and admits nothing (a slow clock admits less)
    assert not (await behind.try_acquire("k")).allowed


async def test_idle_key_state_expires_after_its_window(jsflow_client: Client) -> None:
    # given an admission in a window of 10 s
    name = uniq("fw")
    limiter = fixed(jsflow_client, name, FakeClock())
    assert (await limiter.try_acquire("k")).allowed
    # then the state carries a per-key TTL that outlives the window, but not by much
    msg = await jsflow_client.js.get_msg(
        f"KV_{BUCKET}", subject=f"$KV.{BUCKET}.{name}.k", direct=True
    )
    assert msg.headers is not None
    ttl = int(msg.headers["Nats-TTL"].removesuffix("s"))
    assert 10 < ttl <= 13


async def test_many_concurrent_callers_never_over_admit_within_a_window(
    jsflow_client: Client,
) -> None:
    # given three clients with 16 concurrent callers each on one key, on one shared clock
    clock = FakeClock(1_000_000.5)
    name = uniq("fw")
    burst = 10
    others = [await second_client(jsflow_client) for _ in range(2)]
    try:
        limiters = [
            c.rate_limiter(name, burst, per=1.0, algorithm="fixed_window", clock=clock)
            for c in [jsflow_client, *others]
        ]
        admitted: Counter[int] = Counter()

        async def caller(limiter: RateLimiter, cost: int) -> None:
            for _ in range(3):
                decision = await limiter.try_acquire("hot", cost=cost)
                if decision.allowed:
                    admitted[math.floor(clock())] += cost

        for window in range(3):
            # when they all hammer the key at once, within one window (costs 1 and 2)
            await asyncio.gather(
                *(caller(limiter, 1 + i % 2) for limiter in limiters for i in range(16))
            )
            # then that window admitted its burst exactly: never more, and never less while
            # cost-1 callers kept asking
            assert admitted[math.floor(clock())] == burst, (window, admitted)
            clock.advance(1.0)
    finally:
        for other in others:
            await other.close()


async def test_bad_fixed_window_settings_raise_config_error() -> None:
    # given a client that was never connected: any I/O would fail differently
    client = object.__new__(Client)
    with pytest.raises(jsflow.ConfigError, match="at least"):
        RateLimiter(client, "fw", 10, per=0.0001, algorithm="fixed_window")
    with pytest.raises(jsflow.ConfigError, match="burst"):
        RateLimiter(client, "fw", 10, burst=2**64, algorithm="fixed_window")
    limiter = RateLimiter(client, "fw", 10, algorithm="fixed_window")
    with pytest.raises(jsflow.ConfigError, match="exceeds burst"):
        await limiter.try_acquire("k", cost=11)


@settings(max_examples=300, deadline=None)
@given(
    per=st.sampled_from([0.5, 1.0, 3.0, 60.0]),
    burst=st.integers(1, 8),
    start=st.floats(0, 100),
    ops=st.lists(
        st.tuples(
            st.floats(0, 1.5),  # seconds since the previous call, in units of per
            st.integers(1, 8),  # cost (clamped to burst)
            st.sampled_from([0.0, 0.0, 0.5, 2.5]),  # horizon in units of per (acquire)
        ),
        max_size=60,
    ),
)
def test_no_aligned_window_ever_holds_more_than_burst(
    per: float, burst: int, start: float, ops: list[tuple[float, int, float]]
) -> None:
    # given a fresh key and any sequence of calls, some reserving ahead (acquire)
    state = RateLimitState()
    now = 1_000.0 + start
    per_window: Counter[int] = Counter()
    last_at = 0.0
    for gap, asked, horizon in ops:
        now += gap * per
        cost = min(asked, burst)
        # when each is decided
        plan = _fixed_window_step(
            state, now, cost=cost, interval=per / burst, burst=burst, horizon=horizon * per, per=per
        )
        assert plan.remaining >= 0
        if not plan.committed:
            assert plan.wait > 0
            continue
        # then the units land inside the window the state counts, first come first served
        at = now + plan.wait
        window = state.fixed_window
        assert window * per - 1e-6 <= at < (window + 1) * per
        assert at >= last_at - 1e-9
        last_at = at
        per_window[window] += cost
        assert per_window[window] == state.fixed_count
    # and no aligned window ever admitted more than the burst
    assert all(total <= burst for total in per_window.values())
