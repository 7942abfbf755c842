"""Rate limit: admit the wrapped stage through a distributed :class:`RateLimiter`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from jsflow.errors import ConfigError
from jsflow.flow.handler import NamedStage, StageFn, stage_name
from jsflow.flow.message import Message

if TYPE_CHECKING:
    from jsflow.client import Client

__all__ = ["RateLimit"]


def _everyone(msg: Message[Any]) -> str:
    return "all"


@dataclass(frozen=True, slots=True)
class RateLimit:
    """Wait for ``client.rate_limiter(name, rate, per, burst)`` before each call.

    ``key`` picks the limiter key per message (one shared key by default); ``cost`` is the
    tokens one call takes; ``timeout`` bounds the wait (then :class:`RateLimitExceeded` fails
    the stage and the message is nak'ed with backoff).
    """

    client: Client
    name: str
    rate: float
    per: float = 1.0
    burst: int | None = None
    key: Callable[[Message[Any]], str] = _everyone
    cost: int = 1
    timeout: float | None = None
    _limiter: list[Any] = field(default_factory=list, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not self.rate > 0 or not self.per > 0:
            raise ConfigError("RateLimit rate and per must be positive")
        if self.cost < 1:
            raise ConfigError(f"RateLimit.cost must be >= 1, got {self.cost}")

    def limiter(self) -> Any:
        """The underlying :class:`jsflow.coordination.rate_limiter.RateLimiter` (made once)."""
        if not self._limiter:
            self._limiter.append(
                self.client.rate_limiter(self.name, self.rate, per=self.per, burst=self.burst)
            )
        return self._limiter[0]

    def __call__(self, stage: StageFn) -> StageFn:
        """Wrap ``stage``."""
        name = stage_name(stage)
        options = self

        async def limited(msg: Message[Any]) -> Any:
            await options.limiter().acquire(
                options.key(msg), cost=options.cost, timeout=options.timeout
            )
            return await stage(msg)

        return NamedStage(name, limited)
