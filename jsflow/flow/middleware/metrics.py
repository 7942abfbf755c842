"""Metrics: calls, failures and latency per stage, into a :class:`FlowMetrics`."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from jsflow.flow.handler import NamedStage, StageFn, stage_name
from jsflow.flow.message import Message
from jsflow.flow.metrics import FlowMetrics

__all__ = ["Metrics"]


@dataclass(frozen=True, slots=True)
class Metrics:
    """Record each call of the wrapped stage in ``metrics`` (e.g. ``flow.metrics``);
    read them with ``metrics.snapshot().stages[name]``.
    """

    metrics: FlowMetrics

    def __call__(self, stage: StageFn) -> StageFn:
        """Wrap ``stage``."""
        name = stage_name(stage)
        sink = self.metrics

        async def measured(msg: Message[Any]) -> Any:
            started = time.monotonic()
            try:
                result = await stage(msg)
            except BaseException:
                sink.record_stage(name, time.monotonic() - started, ok=False)
                raise
            sink.record_stage(name, time.monotonic() - started, ok=True)
            return result

        return NamedStage(name, measured)
