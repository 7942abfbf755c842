"""Tasks and events: @task workers, task state, EventRouter, DAG, schedules, artifacts.

Events define intent, the router expands intent into tasks, workers execute atomic units of
work; task state lives in a KV bucket and every status change is a compare-and-set.
"""

from __future__ import annotations

from jsflow.tasks.app import App
from jsflow.tasks.artifacts import ArtifactStore
from jsflow.tasks.backend import TaskBackend
from jsflow.tasks.context import TaskContext, current_task
from jsflow.tasks.errors import DependencyCycleError, TaskNotFoundError, TaskTimeoutError
from jsflow.tasks.events import TaskEvent, TaskEvents
from jsflow.tasks.function import TaskFunction, TaskOptions
from jsflow.tasks.handle import TaskHandle
from jsflow.tasks.router import EventRouter, Rule
from jsflow.tasks.schedules import Schedule
from jsflow.tasks.state import TaskInfo, TaskStore
from jsflow.tasks.status import TaskStatus
from jsflow.tasks.worker import Worker

__all__ = [
    "App",
    "ArtifactStore",
    "DependencyCycleError",
    "EventRouter",
    "Rule",
    "Schedule",
    "TaskBackend",
    "TaskContext",
    "TaskEvent",
    "TaskEvents",
    "TaskFunction",
    "TaskHandle",
    "TaskInfo",
    "TaskNotFoundError",
    "TaskOptions",
    "TaskStatus",
    "TaskStore",
    "TaskTimeoutError",
    "Worker",
    "current_task",
]
