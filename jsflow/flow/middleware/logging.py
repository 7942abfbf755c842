"""Logging: a structured log line per stage call, bound to the message's correlation id."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from jsflow.flow.handler import NamedStage, StageFn, stage_name
from jsflow.flow.message import Message
from jsflow.observability import get_logger

__all__ = ["Logging"]


@dataclass(frozen=True, slots=True)
class Logging:
    """Log ``flow.stage.done`` (at ``level``) or ``flow.stage.failed`` (warning) per call,
    with stage, message id, correlation id, delivery and duration.
    """

    logger_name: str = "jsflow.flow"
    level: str = "debug"

    def __call__(self, stage: StageFn) -> StageFn:
        """Wrap ``stage``."""
        name = stage_name(stage)
        log = get_logger(self.logger_name)
        level = self.level

        async def logged(msg: Message[Any]) -> Any:
            bound = log.bind(
                stage=name, id=msg.id, correlation_id=msg.correlation_id, delivery=msg.delivery
            )
            started = time.monotonic()
            try:
                result = await stage(msg)
            except Exception as exc:
                bound.warning(
                    "flow.stage.failed",
                    error=repr(exc),
                    seconds=round(time.monotonic() - started, 6),
                )
                raise
            getattr(bound, level)("flow.stage.done", seconds=round(time.monotonic() - started, 6))
            return result

        return NamedStage(name, logged)
