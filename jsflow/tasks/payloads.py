"""Task payloads: arguments and results inline in a message or state, or moved to the
artifact object store when large, with the lifetime of their task."""

from __future__ import annotations

from jsflow._proto import task_pb2
from jsflow.tasks.artifacts import ArtifactStore
from jsflow.tasks.lifecycle import status_of
from jsflow.tasks.status import TaskStatus
from jsflow.tasks.streams import DEFAULT_APP

__all__ = ["DEFAULT_ARTIFACT_THRESHOLD", "Payloads"]

DEFAULT_ARTIFACT_THRESHOLD = 256 * 1024
# Artifacts outlive their task's state by this much, so a reader never sees a state whose
# artifact is already gone.
_ARTIFACT_MARGIN = 60.0


class Payloads:
    """Puts, fetches and expires the payloads of one app's tasks.

    A payload above ``threshold`` bytes (or above what the server's ``max_payload`` lets a
    message carry) goes to ``artifacts`` and is referred to by name; ``retention`` (seconds,
    ``None``: forever) is how long a finished task's payloads stay.
    """

    def __init__(
        self, artifacts: ArtifactStore, *, threshold: int, retention: float | None, app: str
    ) -> None:
        self.artifacts = artifacts
        self.threshold = threshold
        self.retention = retention
        self.app = app

    @property
    def artifact_ttl(self) -> float | None:
        """Lifetime of the artifacts of a finished task (``None``: forever)."""
        return None if self.retention is None else self.retention + _ARTIFACT_MARGIN

    async def put(self, name: str, data: bytes, *, ttl: float | None = None) -> tuple[bytes, str]:
        """``(data, "")``, or ``(b"", ref)`` after moving a large payload to the object store
        (expiring after ``ttl`` seconds when given)."""
        if len(data) <= self.artifacts.inline_limit(self.threshold):
            return data, ""
        if self.app != DEFAULT_APP:  # two apps may use one task id
            name = f"{self.app}/{name}"
        return b"", await self.artifacts.put(name, data, ttl=ttl)

    async def fetch(self, data: bytes, ref: str) -> bytes:
        """The payload itself, fetching it from the object store when ``ref`` is set."""
        return await self.artifacts.get(ref) if ref else data

    async def settle(self, state: task_pb2.TaskState, args: bytes | None = None) -> None:
        """After ``state`` became terminal: give its artifacts the state's lifetime.

        The arguments of a task that can never run again (``SUCCEEDED``, ``CANCELLED``) are
        deleted; those of a dead letter (``FAILED``, ``DEAD``: replayable) are rewritten to
        expire with it (``args``, when the caller holds them, saves reading them back).
        Results were written with that lifetime already. Idempotent.
        """
        if self.retention is None or not state.args_ref:
            return
        if status_of(state) in (TaskStatus.SUCCEEDED, TaskStatus.CANCELLED):
            await self.artifacts.delete(state.args_ref)
        else:
            await self.artifacts.expire(state.args_ref, self.artifact_ttl, args)

    async def keep(self, state: task_pb2.TaskState) -> None:
        """A replayed task is pending again: its arguments must not expire."""
        if state.args_ref and self.retention is not None:
            await self.artifacts.expire(state.args_ref, None)
