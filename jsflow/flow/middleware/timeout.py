"""Timeout: a stage that runs longer than ``seconds`` fails with :class:`StageTimeoutError`."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from jsflow.errors import ConfigError
from jsflow.flow.errors import StageTimeoutError
from jsflow.flow.handler import NamedStage, StageFn, stage_name
from jsflow.flow.message import Message

__all__ = ["Timeout"]


@dataclass(frozen=True, slots=True)
class Timeout:
    """Cancel the wrapped stage after ``seconds`` and raise :class:`StageTimeoutError`."""

    seconds: float

    def __post_init__(self) -> None:
        if not self.seconds > 0:
            raise ConfigError(f"Timeout.seconds must be positive, got {self.seconds}")

    def __call__(self, stage: StageFn) -> StageFn:
        """Wrap ``stage``."""
        name = stage_name(stage)
        seconds = self.seconds

        async def timed(msg: Message[Any]) -> Any:
            try:
                async with asyncio.timeout(seconds):
                    return await stage(msg)
            except TimeoutError as exc:
                raise StageTimeoutError(name, seconds) from exc

        return NamedStage(name, timed)
