"""The rate limiter's promise, checked over every window of a run of admissions."""

from __future__ import annotations

from collections.abc import Sequence

TOLERANCE = 1e-6


class FakeClock:
    """A wall clock the test moves by hand."""

    def __init__(self, start: float = 1_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def assert_never_over_admits(
    admissions: Sequence[tuple[float, int]], rate: float, per: float, burst: int, slack: float = 0
) -> None:
    """Every window [t_i, t_j] holds at most burst + rate * (t_j - t_i + slack) / per units."""
    events = sorted(admissions)
    for i in range(len(events)):
        total = 0
        for j in range(i, len(events)):
            total += events[j][1]
            span = events[j][0] - events[i][0] + slack
            assert total <= burst + rate * span / per + TOLERANCE, (
                f"{total} units admitted within {span:.6f}s (rate={rate}/{per}s, burst={burst})"
            )
