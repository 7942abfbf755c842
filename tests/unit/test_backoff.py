"""The one backoff of jsflow: capped, growing, jittered within its bounds, and the delays of
its users (store retries, the Retry middleware, task retries, fetch errors); no server."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import jsflow
from jsflow.backoff import Backoff
from jsflow.errors import ConfigError
from jsflow.flow.consume import FETCH_BACKOFF
from jsflow.flow.middleware import Retry
from jsflow.store import RetryPolicy
from jsflow.tasks.app import TaskOptions

seconds = st.floats(min_value=0, max_value=100, allow_nan=False)


@given(
    initial=seconds,
    extra=seconds,
    multiplier=st.floats(min_value=1, max_value=10),
    jitter=st.floats(min_value=0, max_value=1),
    attempt=st.integers(min_value=-5, max_value=10_000),
)
def test_a_delay_grows_to_its_cap_and_jitters_only_downwards(
    initial: float, extra: float, multiplier: float, jitter: float, attempt: int
) -> None:
    backoff = Backoff(
        initial=initial, maximum=initial + extra, multiplier=multiplier, jitter=jitter
    )
    ceiling = backoff.ceiling(attempt)
    assert min(initial, backoff.maximum) <= ceiling <= backoff.maximum
    assert ceiling <= backoff.ceiling(attempt + 1)
    delay = backoff.delay(attempt)
    assert ceiling * (1 - jitter) - 1e-9 <= delay <= ceiling
    assert math.isfinite(delay)


def test_without_jitter_the_delays_are_exact() -> None:
    backoff = Backoff(initial=1.0, maximum=60.0)
    assert [backoff.delay(n) for n in range(1, 9)] == [1, 2, 4, 8, 16, 32, 60, 60]


@pytest.mark.parametrize(
    "options",
    [
        {"initial": -1.0},
        {"initial": 2.0, "maximum": 1.0},
        {"multiplier": 0.5},
        {"jitter": 1.5},
        {"initial": float("nan")},
        {"maximum": "5"},
    ],
)
def test_a_bad_backoff_is_a_config_error_naming_it(options: dict[str, object]) -> None:
    with pytest.raises(ConfigError, match="backoff"):
        Backoff(**options)  # type: ignore[arg-type]


@given(attempt=st.integers(1, 40), backoff=st.floats(0, 5), extra=st.floats(0, 100))
def test_retry_delay_grows_and_is_bounded(attempt: int, backoff: float, extra: float) -> None:
    # given options, then delays never shrink with attempts and never exceed max_backoff
    opts = TaskOptions(name="x", backoff=backoff, max_backoff=backoff + extra)
    assert opts.retry_delay(attempt) <= opts.max_backoff
    assert opts.retry_delay(attempt) <= opts.retry_delay(attempt + 1)


@given(
    st.integers(min_value=1, max_value=30),
    st.floats(min_value=0, max_value=2),
    st.floats(min_value=1, max_value=4),
    st.floats(min_value=0, max_value=10),
)
def test_retry_delay_is_bounded_and_monotonic(attempt, initial, multiplier, cap):
    # given any retry options, then delays never exceed the cap and never shrink
    retry = Retry(initial_interval=initial, multiplier=multiplier, max_interval=cap)
    assert 0 <= retry.delay(attempt) <= cap
    assert retry.delay(attempt) <= retry.delay(attempt + 1) or retry.delay(attempt) == cap


def test_fetch_backoff_is_capped_jittered_and_never_zero():
    delays = [FETCH_BACKOFF.delay(n) for n in range(1, 51)]
    assert all(0.05 <= d <= 5.0 for d in delays)
    assert max(delays[-10:]) <= 5.0 and min(delays[-10:]) >= 2.5


def test_retry_policy_rejects_bad_bounds() -> None:
    with pytest.raises(jsflow.ConfigError):
        jsflow.RetryPolicy(attempts=0)
    with pytest.raises(jsflow.ConfigError):
        jsflow.RetryPolicy(deadline=0)
    with pytest.raises(jsflow.ConfigError):
        jsflow.RetryPolicy(initial_backoff=1.0, max_backoff=0.5)


@pytest.mark.parametrize(
    ("options", "parameter"),
    [
        ({"attempts": "3"}, "attempts"),
        ({"attempts": 0}, "attempts"),
        ({"initial_backoff": math.nan}, "initial_backoff"),
        ({"max_backoff": math.inf}, "max_backoff"),
        ({"deadline": "1"}, "deadline"),
        ({"deadline": 0}, "deadline"),
    ],
)
def test_bad_retry_policy_raises_config_error_naming_the_field(
    options: dict[str, Any], parameter: str
) -> None:
    with pytest.raises(ConfigError, match=parameter):
        RetryPolicy(**options)
