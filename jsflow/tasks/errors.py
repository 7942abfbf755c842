"""Exceptions specific to the tasks layer (all in the :class:`jsflow.TaskError` family)."""

from __future__ import annotations

from jsflow.errors import ConfigError, TaskError

__all__ = ["DependencyCycleError", "TaskNotFoundError", "TaskTimeoutError"]


class TaskTimeoutError(TaskError):
    """A task attempt ran longer than its ``timeout`` and was cancelled."""


class TaskNotFoundError(TaskError, LookupError):
    """No task with the given id exists in the task store."""

    def __init__(self, task_id: str) -> None:
        super().__init__(f"task {task_id!r} not found")
        self.task_id = task_id


class DependencyCycleError(TaskError, ConfigError):
    """A task would (transitively) depend on itself."""
