"""``current_task()``: the running task's id, attempt and progress reporting."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from jsflow.errors import ConfigError, TaskError
from jsflow.tasks.events import TaskEvent, publish_event
from jsflow.tasks.streams import DEFAULT_APP

if TYPE_CHECKING:
    from jsflow.client import Client

__all__ = ["TaskContext", "current_task"]


class TaskContext:
    """What a running task knows about itself; get it with :func:`current_task`."""

    def __init__(
        self,
        client: Client,
        task_id: str,
        name: str,
        attempt: int,
        *,
        app: str = DEFAULT_APP,
        depends_on: Sequence[str] = (),
        load_result: Callable[[str], Awaitable[Any]] | None = None,
    ) -> None:
        self._client = client
        self._app = app
        self.id = task_id
        self.name = name
        self.attempt = attempt
        self.depends_on = tuple(depends_on)
        """The ids of the tasks this one waited for (``depends_on``), in order."""
        self._load_result = load_result

    async def dependency_results(self) -> list[Any]:
        """The results of the tasks this one depended on, in ``depends_on`` order (each
        decoded with its task's codec): how a chord's callback gets its header's results."""
        if self._load_result is None:
            return []
        return list(await asyncio.gather(*(self._load_result(d) for d in self.depends_on)))

    async def progress(self, percent: float, message: str = "") -> None:
        """Report progress (0-100) as a ``task.progress.<name>`` event."""
        if not 0 <= percent <= 100:
            raise ConfigError(f"progress must be between 0 and 100, got {percent}")
        await publish_event(
            self._client,
            TaskEvent(self.id, self.name, "progress", self.attempt, float(percent), message),
            app=self._app,
        )


_current: ContextVar[TaskContext | None] = ContextVar("jsflow_current_task", default=None)


def current_task() -> TaskContext:
    """The :class:`TaskContext` of the task running in this coroutine (raises outside one)."""
    ctx = _current.get()
    if ctx is None:
        raise TaskError("current_task() called outside a running task")
    return ctx
