"""Dedupe: run the wrapped stage at most once per idempotency key (KV-backed)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from jsflow.errors import ConfigError, KeyExistsError
from jsflow.flow.handler import NamedStage, StageFn, stage_name
from jsflow.flow.message import Message
from jsflow.flow.state import bounded_key
from jsflow.store import ObjectStore

__all__ = ["Dedupe", "DedupeMark"]


def _by_id(msg: Message[Any]) -> str:
    return msg.id


@dataclass
class DedupeMark:
    """What the dedupe store holds per key: who claimed it and when."""

    stage: str = ""
    message_id: str = ""
    at: float = 0.0


@dataclass(frozen=True, slots=True)
class Dedupe:
    """Filter out messages whose idempotency key was already claimed in ``store``.

    The key (``key(msg)``, the message id by default) is claimed with
    :meth:`ObjectStore.create` before the wrapped stage runs (a long key, such as a remote
    ``Nats-Msg-Id``, is hashed into a bounded one); a :class:`KeyExistsError`
    means a duplicate, which is filtered (``None``). If the stage fails, the claim is
    deleted so a redelivery runs it again. ``ttl`` ages claims out (seconds).
    Wrap the stage whose effect must not repeat: a claimed message is filtered even if a
    *later* stage failed and it came back.
    """

    store: ObjectStore[DedupeMark]
    key: Callable[[Message[Any]], str] = _by_id
    ttl: float | None = None

    def __post_init__(self) -> None:
        if self.ttl is not None and not self.ttl > 0:
            raise ConfigError(f"Dedupe.ttl must be positive, got {self.ttl}")

    def __call__(self, stage: StageFn) -> StageFn:
        """Wrap ``stage``."""
        name = stage_name(stage)
        options = self

        async def deduped(msg: Message[Any]) -> Any:
            claim = bounded_key("dedupe", name, str(options.key(msg)))
            mark = DedupeMark(stage=name, message_id=msg.id[:1024], at=time.time())
            try:
                entry = await options.store.create(claim, mark, ttl=options.ttl)
            except KeyExistsError:
                return None
            try:
                return await stage(msg)
            except BaseException:
                with contextlib.suppress(Exception):
                    await options.store.delete(claim, revision=entry.revision)
                raise

        return NamedStage(name, deduped)
