"""One backoff value for every retry in jsflow.

Store retries after conflicts, the flow ``Retry`` middleware, task retries and the pause
of a consumer loop after fetch errors all wait ``Backoff.delay(n)`` before their ``n``-th
retry: exponential, capped, and jittered by a fraction of the delay. One definition, so a
delay means the same thing in every layer.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from jsflow._validate import duration, number
from jsflow.errors import ConfigError

__all__ = ["Backoff"]


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff: retry ``n`` (1-based) waits ``min(maximum, initial *
    multiplier**(n-1))`` seconds, drawn from ``[d * (1 - jitter), d]``.

    ``jitter`` 0 gives exact delays (task retries, which users read in their logs); 1 is
    "full jitter" (store conflicts: contenders spread out over the whole window); 0.5 keeps
    a floor so a loop that keeps failing never spins (fetch errors).
    """

    initial: float = 0.1
    maximum: float = 5.0
    multiplier: float = 2.0
    jitter: float = 0.0

    def __post_init__(self) -> None:
        initial = duration("backoff initial", self.initial, positive=False)
        if duration("backoff maximum", self.maximum, positive=False) < initial:
            raise ConfigError(f"backoff maximum ({self.maximum}) must be >= initial ({initial})")
        number("backoff multiplier", self.multiplier, minimum=1.0, maximum=1000.0)
        number("backoff jitter", self.jitter, minimum=0.0, maximum=1.0)

    def ceiling(self, attempt: int) -> float:
        """The delay before retry ``attempt`` (1-based) without jitter."""
        exponent = min(max(attempt, 1) - 1, 1024)
        try:
            grown = self.initial * self.multiplier**exponent
        except OverflowError:
            return float(self.maximum)
        return float(min(self.maximum, grown))

    def delay(self, attempt: int) -> float:
        """The delay before retry ``attempt`` (1-based), jittered."""
        ceiling = self.ceiling(attempt)
        if not self.jitter:
            return ceiling
        return ceiling * (1.0 - self.jitter * random.random())
