"""Per-message state recorded by a flow in an ObjectStore (``FlowHandler(state_store=...)``)."""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass

from jsflow._validate import id_key
from jsflow.keys import key
from jsflow.observability import get_logger
from jsflow.store import ObjectStore

__all__ = ["MessageState", "MessageStatus", "StateRecorder", "bounded_key", "state_key"]

_log = get_logger(__name__)


class MessageStatus(enum.Enum):
    """Where a source message is in its flow."""

    RECEIVED = "RECEIVED"
    RUNNING = "RUNNING"
    DONE = "DONE"
    FAILED = "FAILED"
    DEAD = "DEAD"


@dataclass
class MessageState:
    """The recorded state of one source message (JSON in the state store)."""

    id: str = ""
    status: MessageStatus = MessageStatus.RECEIVED
    stage: str = ""
    attempts: int = 0
    error: str = ""
    correlation_id: str = ""
    updated_at: float = 0.0


_MAX_READABLE = 512  # longer escaped ids are hashed (keys are bounded at 1,024 chars)


def bounded_key(*parts: str) -> str:
    """:func:`jsflow.key` of ``parts``, the last one hashed (``id_key``) when the key would
    be long: ids come from message headers, and a remote id must never make a key illegal."""
    if len(parts[-1]) <= _MAX_READABLE:
        built = key(*parts)
        if len(built) <= _MAX_READABLE:
            return built
    return key(*parts[:-1], id_key(parts[-1]))


def state_key(message_id: str) -> str:
    """The state-store key of a message id (any string made a legal, bounded key)."""
    return bounded_key("msg", message_id)


class StateRecorder:
    """Writes :class:`MessageState` records; a failed write is logged, never fails a message."""

    def __init__(self, store: ObjectStore[MessageState]) -> None:
        self.store = store

    async def record(
        self,
        message_id: str,
        status: MessageStatus,
        *,
        stage: str = "",
        attempts: int = 0,
        error: str = "",
        correlation_id: str = "",
    ) -> None:
        """Write the state of ``message_id`` (last write wins)."""
        state = MessageState(
            id=message_id[:1024],
            status=status,
            stage=stage,
            attempts=attempts,
            error=error,
            correlation_id=correlation_id,
            updated_at=time.time(),
        )
        try:
            await self.store.put(state_key(message_id), state)
        except Exception as exc:  # bookkeeping must not change the message's fate
            _log.warning("flow.state_write_failed", id=message_id[:200], error=repr(exc))

    async def get(self, message_id: str) -> MessageState | None:
        """The recorded state of ``message_id``, if any."""
        entry = await self.store.get(state_key(message_id))
        return entry.value if entry is not None else None
