"""The rate limiter's algorithms (GCRA and sliding window) as pure functions of a simulated
clock: never over-admitting, and a denied call admitted exactly at retry_after (no server)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from jsflow._proto.rate_limiter_pb2 import RateLimitState
from jsflow.coordination.rate_limiter import _gcra_step, _window_step
from tests.support.limits import TOLERANCE, assert_never_over_admits

ALGORITHMS = ["gcra", "sliding_window"]
STEPS = {"gcra": _gcra_step, "sliding_window": _window_step}


@settings(max_examples=300)
@given(
    algorithm=st.sampled_from(ALGORITHMS),
    rate=st.floats(0.5, 50),
    per=st.floats(0.1, 5),
    burst=st.integers(1, 8),
    ops=st.lists(
        st.tuples(
            st.floats(0, 2),  # seconds since the previous call, in units of per / rate
            st.integers(1, 8),  # cost (clamped to burst)
            st.sampled_from([0.0, 0.0, 0.5, 3.0]),  # horizon (acquire's remaining timeout)
        ),
        max_size=60,
    ),
)
def test_algorithms_never_admit_more_than_burst_plus_rate_times_window(
    algorithm: str,
    rate: float,
    per: float,
    burst: int,
    ops: list[tuple[float, int, float]],
) -> None:
    # given a fresh key and any sequence of calls, some reserving ahead (acquire)
    step = STEPS[algorithm]
    state = RateLimitState()
    interval = per / rate
    now = 1_000.0
    admissions: list[tuple[float, int]] = []
    last_at = 0.0
    for gap, asked, horizon in ops:
        now += gap * interval
        cost = min(asked, burst)
        # when each is decided
        plan = step(
            state, now, cost=cost, interval=interval, burst=burst, horizon=horizon * interval
        )
        if plan.committed:
            at = now + plan.wait
            # then admissions happen first come, first served
            assert at >= last_at - TOLERANCE
            last_at = at
            admissions.append((at, cost))
        else:
            assert plan.wait > 0
        assert plan.remaining >= 0
        assert len(state.window) <= burst
    # then no window of any length holds more than burst + rate * t / per
    assert_never_over_admits(admissions, rate, per, burst)


@settings(max_examples=100)
@given(
    algorithm=st.sampled_from(ALGORITHMS),
    burst=st.integers(1, 6),
    gaps=st.lists(st.floats(0, 3), max_size=30),
)
def test_a_denied_call_is_admitted_exactly_after_retry_after(
    algorithm: str, burst: int, gaps: list[float]
) -> None:
    # given a key driven by arbitrary traffic
    step = STEPS[algorithm]
    state = RateLimitState()
    now = 50.0
    for gap in gaps:
        now += gap
        plan = step(state, now, cost=1, interval=1.0, burst=burst, horizon=0.0)
        if plan.committed:
            continue
        # when a call is denied, then it is still denied a little before retry_after...
        early = step(state, now + plan.wait * 0.99, cost=1, interval=1.0, burst=burst, horizon=0.0)
        assert not early.committed
        # ...and admitted at retry_after
        now += plan.wait
        assert step(state, now, cost=1, interval=1.0, burst=burst, horizon=0.0).committed
