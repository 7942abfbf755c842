"""Retry in place: re-run a failing stage a bounded number of times with backoff."""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass
from typing import Any

from jsflow.errors import ConfigError
from jsflow.flow.handler import NamedStage, StageFn, stage_name
from jsflow.flow.message import Message
from jsflow.observability import get_logger

__all__ = ["Retry"]

_log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Retry:
    """Retry the wrapped stage in place, without a redelivery.

    Attempt ``n`` (from 1) waits ``min(max_interval, initial_interval * multiplier**(n-1))``,
    randomized by ``± randomization_factor``. It stops after ``max_retries`` retries or once
    ``max_elapsed`` seconds have passed, then re-raises the last error. Only exceptions of
    the types in ``retry_on`` are retried.
    """

    max_retries: int = 3
    initial_interval: float = 0.1
    multiplier: float = 2.0
    max_interval: float = 5.0
    max_elapsed: float | None = None
    randomization_factor: float = 0.1
    retry_on: tuple[type[BaseException], ...] = (Exception,)

    def __post_init__(self) -> None:
        if self.max_retries < 0:
            raise ConfigError(f"Retry.max_retries must be >= 0, got {self.max_retries}")
        if self.initial_interval < 0 or self.max_interval < 0 or self.multiplier < 1:
            raise ConfigError("Retry needs intervals >= 0 and multiplier >= 1")
        if not 0 <= self.randomization_factor <= 1:
            raise ConfigError("Retry.randomization_factor must be in [0, 1]")
        if self.max_elapsed is not None and not self.max_elapsed > 0:
            raise ConfigError("Retry.max_elapsed must be positive")

    def delay(self, attempt: int) -> float:
        """The wait before retry ``attempt`` (1-based), before randomization."""
        return min(self.max_interval, self.initial_interval * self.multiplier ** (attempt - 1))

    def __call__(self, stage: StageFn) -> StageFn:
        """Wrap ``stage``."""
        name = stage_name(stage)
        options = self

        async def retried(msg: Message[Any]) -> Any:
            started = time.monotonic()
            for attempt in range(options.max_retries + 1):
                try:
                    return await stage(msg)
                except options.retry_on as exc:
                    if attempt >= options.max_retries:
                        raise
                    wait = options.delay(attempt + 1)
                    jitter = wait * options.randomization_factor
                    wait = max(0.0, random.uniform(wait - jitter, wait + jitter))
                    elapsed = time.monotonic() - started
                    if options.max_elapsed is not None and elapsed + wait > options.max_elapsed:
                        raise
                    _log.debug("flow.stage_retry", stage=name, attempt=attempt + 1, error=repr(exc))
                    await asyncio.sleep(wait)
            raise AssertionError("unreachable")  # pragma: no cover

        return NamedStage(name, retried)
