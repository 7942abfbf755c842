"""The one backoff of jsflow: capped, growing, jittered within its bounds (no server)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jsflow.backoff import Backoff
from jsflow.errors import ConfigError

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
