"""``TaskStatus``: the lifecycle states of a task."""

from __future__ import annotations

import enum

from jsflow._proto import task_pb2

__all__ = ["TERMINAL", "TaskStatus"]


class TaskStatus(enum.Enum):
    """Where a task is in its lifecycle.

    ``PENDING`` (submitted, or waiting for dependencies) → ``RUNNING`` → ``SUCCEEDED``, or
    ``RETRYING`` → ``RUNNING`` … → ``FAILED`` once retries are spent. ``CANCELLED``: cancelled,
    or a dependency did not succeed. ``DEAD``: the task could not be executed at all
    (undecodable arguments, or redelivered too often, e.g. workers crashing on it).
    """

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    RETRYING = "RETRYING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    DEAD = "DEAD"

    @property
    def terminal(self) -> bool:
        """Whether the task has finished for good (no further transitions)."""
        return self in TERMINAL

    def to_proto(self) -> int:
        """The ``TaskStatusCode`` number of this status."""
        return int(task_pb2.TaskStatusCode.Value(f"TASK_STATUS_{self.value}"))

    @classmethod
    def from_proto(cls, code: int) -> TaskStatus:
        """The status for a ``TaskStatusCode`` number (unset reads as ``PENDING``)."""
        if code == 0:
            return cls.PENDING
        return cls(task_pb2.TaskStatusCode.Name(code).removeprefix("TASK_STATUS_"))


TERMINAL = frozenset(
    {TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.CANCELLED, TaskStatus.DEAD}
)
