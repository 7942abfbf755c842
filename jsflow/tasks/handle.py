"""``TaskHandle``: follow, await and cancel one submitted task."""

from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from jsflow._proto import task_pb2
from jsflow._validate import check_id, optional_duration
from jsflow.errors import RequestTimeoutError, TaskCancelledError, TaskFailedError
from jsflow.tasks.calls import JSON_ANY
from jsflow.tasks.errors import TaskNotFoundError
from jsflow.tasks.events import TaskEvents
from jsflow.tasks.lifecycle import status_of
from jsflow.tasks.state import TaskInfo
from jsflow.tasks.status import TaskStatus

if TYPE_CHECKING:
    from jsflow.tasks.backend import TaskBackend
    from jsflow.tasks.calls import CallCodec

__all__ = ["TaskHandle"]

R = TypeVar("R")


class TaskHandle(Generic[R]):
    """A submitted task, by id. Cheap: holds no server resources of its own.

    ``result()`` waits on the task store's one shared watch, so any number of handles
    waiting at once cost the server a single consumer; ``events()`` followers share one
    core subscription per client. The id is checked (``check_id``) before any I/O.
    """

    def __init__(
        self,
        backend: TaskBackend,
        task_id: str,
        name: str = "",
        codec: CallCodec | None = None,
    ) -> None:
        self._backend = backend
        self.id = check_id("task id", task_id)
        self.name = name
        self._codec = codec

    def __repr__(self) -> str:
        return f"TaskHandle(id={self.id!r}, name={self.name!r})"

    async def info(self) -> TaskInfo:
        """A snapshot of the task's state (:class:`TaskNotFoundError` when unknown)."""
        info = await self._backend.store.info(self.id)
        if info is None:
            raise TaskNotFoundError(self.id)
        return info

    async def status(self) -> TaskStatus:
        """The task's current :class:`TaskStatus`."""
        return (await self.info()).status

    async def cancel(self) -> bool:
        """Cancel the task: pending never starts; running is interrupted on its worker.

        Returns ``False`` when it had already finished.
        """
        return await self._backend.cancel(self.id)

    def events(self, idle_timeout: float | None = None, *, after_seq: int = 0) -> TaskEvents:
        """The task's events from its start, ending after the terminal one (async iterator).

        ``idle_timeout`` raises :class:`RequestTimeoutError` when no event comes that long.
        Any number of followers share the client's one live subscription and read the
        task's messages by direct get: no server-side consumer per follower. Each event
        carries its stream sequence (``seq``); ``after_seq`` resumes after one (nothing lost,
        nothing repeated).
        """
        return TaskEvents(
            self._backend.client,
            self.id,
            idle_timeout,
            name=self.name,
            app=self._backend.app,
            after_seq=after_seq,
        )

    async def result(self, timeout: float | None = None) -> R:
        """Wait for the task to finish and return its result.

        Raises :class:`TaskFailedError` (remote error type and message) when it failed or
        was dead-lettered, :class:`TaskCancelledError` when it was cancelled or a dependency
        failed, :class:`TaskNotFoundError` for an unknown id, and
        :class:`RequestTimeoutError` after ``timeout`` seconds.
        """
        timeout = optional_duration("timeout", timeout, positive=False)
        deadline = None if timeout is None else time.monotonic() + timeout
        store = self._backend.store
        listener = await store.listen(self.id)
        try:
            state = await store.get(self.id)
            if state is None:
                raise TaskNotFoundError(self.id)
            while True:
                if state is not None and status_of(state).terminal:
                    return await self._outcome(state)
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise RequestTimeoutError(f"task {self.id} did not finish in {timeout}s")
                change = await listener.wait(remaining)
                if change is not None:
                    if change.value is None:  # deleted or purged while we waited
                        raise TaskNotFoundError(self.id)
                    state = change.value
        finally:
            listener.close()

    async def _outcome(self, state: task_pb2.TaskState) -> R:
        status = status_of(state)
        if status is TaskStatus.SUCCEEDED:
            data = await self._backend.payloads.fetch(bytes(state.result), state.result_ref)
            if self._codec is None:
                value: Any = JSON_ANY.decode(data) if data else None
                return value  # type: ignore[no-any-return]
            return self._codec.decode_result(data)  # type: ignore[no-any-return]
        if status is TaskStatus.CANCELLED:
            raise TaskCancelledError(
                f"task {self.id} was cancelled: {state.error_message or 'cancelled'}"
            )
        raise TaskFailedError(self.id, state.error_type, state.error_message, state.traceback)

    async def wait(self, timeout: float | None = None) -> TaskStatus:
        """Wait until the task finishes (any outcome) and return its final status."""
        timeout = optional_duration("timeout", timeout, positive=False)
        with contextlib.suppress(TaskFailedError, TaskCancelledError):
            await self.result(timeout)
        return await self.status()
