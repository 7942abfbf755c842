"""Exceptions specific to the tasks layer (all in the :class:`jsflow.TaskError` family).

They are defined in :mod:`jsflow.errors`, the one exception tree; this module keeps the
names importable from where the tasks layer always had them (one class each, not copies).
"""

from __future__ import annotations

from jsflow.errors import DependencyCycleError, TaskNotFoundError, TaskTimeoutError

__all__ = ["DependencyCycleError", "TaskNotFoundError", "TaskTimeoutError"]
