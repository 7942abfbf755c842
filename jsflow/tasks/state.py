"""``TaskStore``: every task's state (a ``TaskState`` protobuf) in one KV bucket.

Every status change is a compare-and-set (:meth:`ObjectStore.update`), so of two workers
racing to finish one task attempt exactly one wins.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from jsflow._proto import task_pb2
from jsflow.errors import ConflictError, KeyExistsError
from jsflow.store import KeyListener, ObjectStore
from jsflow.tasks.lifecycle import Declined
from jsflow.tasks.status import TaskStatus
from jsflow.tasks.streams import STATE_BUCKET

if TYPE_CHECKING:
    from jsflow.client import Client

__all__ = ["TaskInfo", "TaskStore"]

TaskState = task_pb2.TaskState


@dataclass(frozen=True, slots=True)
class TaskInfo:
    """A read-only snapshot of a task's state."""

    id: str
    name: str
    status: TaskStatus
    attempt: int
    error_type: str
    error_message: str
    worker: str
    created_at: float
    started_at: float
    finished_at: float
    cancel_requested: bool
    depends_on: tuple[str, ...]
    revision: int

    @classmethod
    def from_state(cls, state: task_pb2.TaskState, revision: int = 0) -> TaskInfo:
        """Snapshot a ``TaskState``."""
        return cls(
            id=state.id,
            name=state.name,
            status=TaskStatus.from_proto(state.status),
            attempt=state.attempt,
            error_type=state.error_type,
            error_message=state.error_message,
            worker=state.worker,
            created_at=state.created_at,
            started_at=state.started_at,
            finished_at=state.finished_at,
            cancel_requested=state.cancel_requested,
            depends_on=tuple(state.depends_on),
            revision=revision,
        )


class TaskStore:
    """Task states keyed by task id, in the ``jsflow_tasks`` KV bucket."""

    def __init__(self, store: ObjectStore[task_pb2.TaskState]) -> None:
        self.store = store

    @classmethod
    async def open(
        cls, client: Client, bucket: str = STATE_BUCKET, *, replicas: int | None = None
    ) -> TaskStore:
        """Create or bind the bucket (idempotent; ``replicas`` default: the client's)."""
        return cls(await client.object_store(bucket, task_pb2.TaskState, replicas=replicas))

    async def get(self, task_id: str) -> task_pb2.TaskState | None:
        """The state of ``task_id``, or ``None``."""
        entry = await self.store.get(task_id)
        return None if entry is None else entry.value

    async def info(self, task_id: str) -> TaskInfo | None:
        """A :class:`TaskInfo` snapshot of ``task_id``, or ``None``."""
        entry = await self.store.get(task_id)
        return None if entry is None else TaskInfo.from_state(entry.value, entry.revision)

    async def create(self, state: task_pb2.TaskState) -> int:
        """Write a new task's state; returns its revision, or 0 when the id exists already
        (idempotent submit)."""
        try:
            entry = await self.store.create(state.id, state)
        except KeyExistsError:
            return 0
        return entry.revision

    async def compare_and_set(
        self, state: task_pb2.TaskState, revision: int, *, ttl: float | None = None
    ) -> int:
        """Write ``state`` only if ``revision`` is still its latest; returns the new revision,
        0 when it was not.

        One round trip, no retry: for a writer that knows the revision it read (a worker
        starting a task from the state carried in its request, finishing what it started).
        """
        try:
            entry = await self.store.compare_and_set(state.id, state, revision, ttl=ttl)
        except ConflictError:
            return 0
        return entry.revision

    async def transition(
        self,
        task_id: str,
        fn: Callable[[task_pb2.TaskState], None],
        *,
        ttl: float | None = None,
    ) -> task_pb2.TaskState | None:
        """Apply ``fn`` with compare-and-set; ``None`` when ``fn`` raised :class:`Declined`.

        ``fn`` mutates the state in place; it must raise :class:`Declined` to leave it as is
        (it also receives an empty state, ``id == ""``, for an absent task). ``ttl`` (seconds,
        >= 1) expires the written state: the retention of a task that just finished.
        """

        def guarded(state: task_pb2.TaskState) -> None:
            if not state.id:
                raise Declined
            fn(state)

        try:
            entry = await self.store.update(task_id, guarded, ttl=ttl)
        except Declined:
            return None
        return entry.value

    async def snapshot(self) -> list[TaskInfo]:
        """A :class:`TaskInfo` of every task, read in one server-side pass of the bucket
        (:meth:`ObjectStore.entries`: no read per task), unsorted."""
        return [TaskInfo.from_state(e.value, e.revision) for e in await self.store.entries()]

    async def list(
        self, *, statuses: Sequence[TaskStatus] = (), name: str | None = None
    ) -> list[TaskInfo]:
        """Every task (optionally only those with one of ``statuses`` / named ``name``),
        oldest first; one server-side pass (:meth:`snapshot`), not one read per task."""
        found = [
            info
            for info in await self.snapshot()
            if (not statuses or info.status in statuses) and (name is None or info.name == name)
        ]
        return sorted(found, key=lambda i: i.created_at)

    async def listen(self, task_id: str) -> KeyListener[task_pb2.TaskState]:
        """A listener on the store's one shared watch (see :meth:`ObjectStore.listen`)."""
        return await self.store.listen(task_id)
