"""Retry in place: re-run a failing stage a bounded number of times with backoff."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from jsflow._validate import count, duration
from jsflow.backoff import Backoff
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
    reduced by up to ``randomization_factor`` of it (a :class:`jsflow.backoff.Backoff`).
    It stops after ``max_retries`` retries or once ``max_elapsed`` seconds have passed, then
    re-raises the last error. Only exceptions of the types in ``retry_on`` are retried.
    """

    max_retries: int = 3
    initial_interval: float = 0.1
    multiplier: float = 2.0
    max_interval: float = 5.0
    max_elapsed: float | None = None
    randomization_factor: float = 0.1
    retry_on: tuple[type[BaseException], ...] = (Exception,)

    def __post_init__(self) -> None:
        count("Retry.max_retries", self.max_retries, minimum=0, maximum=1_000_000)
        if self.initial_interval < 0 or self.max_interval < 0 or self.multiplier < 1:
            raise ConfigError("Retry needs intervals >= 0 and multiplier >= 1")
        if self.max_elapsed is not None:
            duration("Retry.max_elapsed", self.max_elapsed)
        self.backoff  # noqa: B018 -- checks the intervals and randomization_factor

    @property
    def backoff(self) -> Backoff:
        """The :class:`~jsflow.backoff.Backoff` of the waits between attempts."""
        return Backoff(
            # A cap below the first interval caps it too (every wait is at most the cap).
            initial=min(self.initial_interval, self.max_interval),
            maximum=self.max_interval,
            multiplier=self.multiplier,
            jitter=self.randomization_factor,
        )

    def delay(self, attempt: int) -> float:
        """The wait before retry ``attempt`` (1-based), before randomization."""
        return self.backoff.ceiling(attempt)

    def __call__(self, stage: StageFn) -> StageFn:
        """Wrap ``stage``."""
        name = stage_name(stage)
        options = self
        backoff = self.backoff

        async def retried(msg: Message[Any]) -> Any:
            started = time.monotonic()
            for attempt in range(options.max_retries + 1):
                try:
                    return await stage(msg)
                except options.retry_on as exc:
                    if attempt >= options.max_retries:
                        raise
                    wait = backoff.delay(attempt + 1)
                    elapsed = time.monotonic() - started
                    if options.max_elapsed is not None and elapsed + wait > options.max_elapsed:
                        raise
                    _log.debug("flow.stage_retry", stage=name, attempt=attempt + 1, error=repr(exc))
                    await asyncio.sleep(wait)
            raise AssertionError("unreachable")  # pragma: no cover

        return NamedStage(name, retried)
