"""Task control: cancel and replay, and announcing a task finished by something other than
its worker (a cancel of a pending task, a failed dependency)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import jsflow.tasks.lifecycle as lifecycle  # noqa: PLR0402 -- not via the package: no cycle
from jsflow._js import map_nats_errors
from jsflow._proto import task_pb2
from jsflow.tasks.dag import Dependencies
from jsflow.tasks.errors import TaskNotFoundError
from jsflow.tasks.events import TaskEvent, publish_event
from jsflow.tasks.lifecycle import status_of
from jsflow.tasks.status import TaskStatus
from jsflow.tasks.streams import cancel_subject

if TYPE_CHECKING:
    pass

__all__ = ["Control"]


class Control:
    """Cancels and replays the tasks of one app: those whose dependencies ``dag`` keeps
    (its client, state store, requests and payloads are this one's too)."""

    def __init__(self, dag: Dependencies) -> None:
        self.dag = dag
        self.client = dag.client
        self.store = dag.store
        self.app = dag.app
        self.retention = dag.retention
        self.requests = dag.requests
        self.payloads = dag.payloads

    async def cancel(self, task_id: str) -> bool:
        """Cancel a task: a pending one never starts, a running one is interrupted.

        A running task's worker learns of it from a core NATS signal and, should that be
        lost, from the ``cancel_requested`` flag in the task's state (its shared watch).
        Calling it again while the task still runs sends the signal again. Returns ``False``
        when the task had already finished.
        """

        try:  # the terminal write carries the retention TTL, the flag does not
            new = await self.store.transition(task_id, lifecycle.cancel, ttl=self.retention)
        except lifecycle.StillRunning:
            new = await self.store.transition(task_id, lifecycle.request_cancel)
        if new is None:
            current = await self.store.get(task_id)
            if current is None:
                raise TaskNotFoundError(task_id)
            if not current.cancel_requested or status_of(current).terminal:
                return False
            await self.signal_cancel(task_id)  # asked again: the first signal may be lost
            return True
        if status_of(new) is TaskStatus.CANCELLED:
            await self.finished(new)
        else:
            await self.signal_cancel(task_id)
        return True

    async def signal_cancel(self, task_id: str) -> None:
        """Tell the workers of this app to interrupt ``task_id`` now (core NATS, best effort:
        the state's ``cancel_requested`` flag stands behind it)."""
        subject = cancel_subject(self.app, task_id)
        with map_nats_errors(subject=subject):
            await self.client.nc.publish(subject, b"")

    async def finished(self, state: task_pb2.TaskState) -> None:
        """Announce a task that reached a terminal status by a path other than a worker."""
        status = status_of(state)
        await publish_event(
            self.client,
            app=self.app,
            event=TaskEvent(
                state.id,
                state.name,
                status.value.lower(),
                attempt=state.attempt,
                error_type=state.error_type,
                error_message=state.error_message,
            ),
        )
        await self.dag.on_finished(state)
        await self.payloads.settle(state)

    async def replay(self, task_id: str) -> bool:
        """Run a ``FAILED`` or ``DEAD`` task again from attempt 1; ``False`` if it is neither."""

        def fn(state: task_pb2.TaskState) -> None:
            lifecycle.replay(state)
            state.released = True
            state.replays += 1

        new = await self.store.transition(task_id, fn)
        if new is None:
            if await self.store.get(task_id) is None:
                raise TaskNotFoundError(task_id)
            return False
        await self.payloads.keep(new)
        await self.requests.publish([new], msg_ids=[f"{new.id}-replay{new.replays}"])
        return True
