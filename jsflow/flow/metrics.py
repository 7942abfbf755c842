"""In-process flow metrics: counters and latency histograms, read with ``snapshot()``."""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

__all__ = ["FlowMetrics", "Histogram", "HistogramSnapshot", "MetricsSnapshot", "StageSnapshot"]

_DEFAULT_BOUNDS: tuple[float, ...] = (
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0,
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class HistogramSnapshot:
    """Counts per upper bound (seconds; the last bucket is +inf), total count and sum."""

    bounds: tuple[float, ...]
    counts: tuple[int, ...]
    count: int
    total: float

    def quantile(self, q: float) -> float:
        """Upper bound of the bucket holding quantile ``q`` (0..1); 0.0 when empty."""
        if self.count == 0:
            return 0.0
        rank = q * self.count
        seen = 0
        for i, n in enumerate(self.counts):
            seen += n
            if seen >= rank and n:
                return self.bounds[i] if i < len(self.bounds) else float("inf")
        return float("inf")

    @property
    def mean(self) -> float:
        """Mean of the observed values (0.0 when empty)."""
        return self.total / self.count if self.count else 0.0


class Histogram:
    """A fixed-bucket latency histogram (seconds)."""

    def __init__(self, bounds: tuple[float, ...] = _DEFAULT_BOUNDS) -> None:
        self.bounds = bounds
        self._counts = [0] * (len(bounds) + 1)
        self._count = 0
        self._total = 0.0

    def observe(self, seconds: float) -> None:
        """Record one value."""
        self._counts[bisect.bisect_left(self.bounds, seconds)] += 1
        self._count += 1
        self._total += seconds

    def snapshot(self) -> HistogramSnapshot:
        """A frozen copy."""
        return HistogramSnapshot(self.bounds, tuple(self._counts), self._count, self._total)


@dataclass(frozen=True, slots=True)
class StageSnapshot:
    """Calls, failures and latency of one stage (recorded by the metrics middleware)."""

    calls: int
    failed: int
    latency: HistogramSnapshot


@dataclass(frozen=True, slots=True)
class MetricsSnapshot:
    """A flow's counters at one moment.

    ``processed``: source messages acked after success; ``failed``: failed attempts (each
    nak); ``dead_lettered``: messages sent to the dead letter (then terminated);
    ``in_flight``: fetched and not yet settled; ``latency``: receive-to-ack seconds.
    """

    processed: int
    failed: int
    dead_lettered: int
    in_flight: int
    redelivered: int
    latency: HistogramSnapshot
    stages: dict[str, StageSnapshot] = field(default_factory=dict)


@dataclass(slots=True)
class _Stage:
    calls: int = 0
    failed: int = 0
    latency: Histogram = field(default_factory=Histogram)


class FlowMetrics:
    """Live counters of a flow (``flow.metrics``); single event loop, no locking needed."""

    def __init__(self) -> None:
        self.processed = 0
        self.failed = 0
        self.dead_lettered = 0
        self.in_flight = 0
        self.redelivered = 0
        self.latency = Histogram()
        self._stages: dict[str, _Stage] = {}

    def record_stage(self, name: str, seconds: float, *, ok: bool) -> None:
        """Record one call of stage ``name``."""
        stage = self._stages.get(name)
        if stage is None:
            stage = self._stages[name] = _Stage()
        stage.calls += 1
        if not ok:
            stage.failed += 1
        stage.latency.observe(seconds)

    def snapshot(self) -> MetricsSnapshot:
        """A frozen copy of every counter."""
        return MetricsSnapshot(
            processed=self.processed,
            failed=self.failed,
            dead_lettered=self.dead_lettered,
            in_flight=self.in_flight,
            redelivered=self.redelivered,
            latency=self.latency.snapshot(),
            stages={
                name: StageSnapshot(s.calls, s.failed, s.latency.snapshot())
                for name, s in self._stages.items()
            },
        )
