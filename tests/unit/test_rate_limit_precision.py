"""GCRA keeps its arrival time in integer nanoseconds: at any rate, a limiter asked many
times at one instant admits exactly its burst, never more (a float of Unix seconds rounds
each step to ~0.24 us and admitted 104 of a burst of 100 at a million a second)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from jsflow._proto.rate_limiter_pb2 import RateLimitState
from jsflow.coordination.rate_limiter import _gcra_step


@given(
    rate=st.floats(min_value=1.0, max_value=1e9),
    burst=st.integers(min_value=1, max_value=500),
    now=st.floats(min_value=1.7e9, max_value=2.5e9),
)
def test_at_one_instant_exactly_the_burst_is_admitted(rate: float, burst: int, now: float) -> None:
    state = RateLimitState()
    admitted = sum(
        _gcra_step(state, now, cost=1, interval=1.0 / rate, burst=burst, horizon=0.0).committed
        for _ in range(burst + 20)
    )
    assert admitted == burst


def test_a_million_a_second_with_a_burst_of_a_hundred() -> None:
    state = RateLimitState()
    now = 1.8e9
    admitted = sum(
        _gcra_step(state, now, cost=1, interval=1e-6, burst=100, horizon=0.0).committed
        for _ in range(130)
    )
    assert admitted == 100


def test_state_written_by_an_older_jsflow_is_read() -> None:
    state = RateLimitState(tat=1.8e9 + 10.0)  # seconds, as before
    plan = _gcra_step(state, 1.8e9, cost=1, interval=1.0, burst=1, horizon=0.0)
    assert not plan.committed and abs(plan.wait - 10.0) < 1e-6
