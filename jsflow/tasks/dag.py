"""Task dependencies (``depends_on``): a DAG kept in the task states themselves.

Resolution is leaderless: every step is a compare-and-set on the dependent's state plus an
idempotent publish (``Nats-Msg-Id`` = task id), so any number of resolvers may race safely.
A dependent is released (its request published) once every dependency succeeded, and
cancelled, naming the cause, once one did not; that cancel resolves its own dependents.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import jsflow.tasks.lifecycle as lifecycle  # noqa: PLR0402 -- not via the package: no cycle
from jsflow._proto import task_pb2
from jsflow._validate import check_id
from jsflow.errors import ConfigError
from jsflow.tasks.errors import DependencyCycleError, TaskNotFoundError
from jsflow.tasks.events import TaskEvent, publish_event
from jsflow.tasks.lifecycle import status_of
from jsflow.tasks.payloads import Payloads
from jsflow.tasks.requests import Requests
from jsflow.tasks.state import TaskStore
from jsflow.tasks.status import TaskStatus

if TYPE_CHECKING:
    from jsflow.client import Client

__all__ = ["Dependencies"]

_MAX_GRAPH = 10_000
_FAILED_DEP = (TaskStatus.FAILED, TaskStatus.DEAD, TaskStatus.CANCELLED)


class Dependencies:
    """Registers, releases and cancels the dependents of the tasks of ``app``."""

    def __init__(
        self,
        client: Client,
        store: TaskStore,
        app: str,
        *,
        retention: float | None,
        requests: Requests,
        payloads: Payloads,
    ) -> None:
        self.client = client
        self.store = store
        self.app = app
        self.retention = retention
        self.requests = requests
        self.payloads = payloads

    async def check(self, task_id: str, depends_on: Iterable[str]) -> list[str]:
        """Validate ``depends_on`` for a new task ``task_id``: every dependency must exist and
        none may lead back to ``task_id`` (:class:`DependencyCycleError`)."""
        deps = list(dict.fromkeys(check_id("dependency id", d) for d in depends_on))
        if task_id in deps:
            raise DependencyCycleError(f"task {task_id} cannot depend on itself")
        seen: set[str] = set()
        frontier = deps
        while frontier:
            states = await asyncio.gather(*(self.store.get(d) for d in frontier))
            nxt: list[str] = []
            for dep_id, state in zip(frontier, states, strict=True):
                if state is None:
                    raise TaskNotFoundError(dep_id)
                seen.add(dep_id)
                for up in state.depends_on:
                    if up == task_id:
                        raise DependencyCycleError(
                            f"task {task_id} would depend on itself through {dep_id}"
                        )
                    if up not in seen:
                        nxt.append(up)
            if len(seen) > _MAX_GRAPH:
                raise ConfigError(f"dependency graph of {task_id} exceeds {_MAX_GRAPH} tasks")
            frontier = list(dict.fromkeys(nxt))
        return deps

    async def register(self, state: task_pb2.TaskState, deps: Sequence[str]) -> None:
        """Create a task that waits for ``deps``, register it with them, and try to release."""
        state.depends_on.extend(deps)
        state.released = False
        await self.requests.submit([state])

        def add(dep: task_pb2.TaskState) -> None:
            lifecycle.add_dependent(dep, state.id)  # a finished one: the _resolve below

        await asyncio.gather(*(self.store.transition(d, add) for d in deps))
        # A dependency may have finished before it learnt about us: resolve now as well.
        await self._resolve(state.id)

    async def on_finished(self, state: task_pb2.TaskState) -> None:
        """Release or cancel the dependents of a finished task, transitively (bounded)."""
        queue = deque(state.dependents)
        seen: set[str] = set()
        while queue and len(seen) < _MAX_GRAPH:
            task_id = queue.popleft()
            if task_id in seen:
                continue
            seen.add(task_id)
            cancelled = await self._resolve(task_id)
            if cancelled is not None:
                queue.extend(cancelled.dependents)

    async def _resolve(self, task_id: str) -> task_pb2.TaskState | None:
        """Release ``task_id`` if all its dependencies succeeded, cancel it if one did not.

        Returns the state when this call cancelled the task (its dependents need resolving).
        """
        state = await self.store.get(task_id)
        if state is None or state.released or status_of(state).terminal:
            return None
        deps = await asyncio.gather(*(self.store.get(d) for d in state.depends_on))
        failed = next(
            (
                (dep_id, d)
                for dep_id, d in zip(state.depends_on, deps, strict=True)
                if d is None or status_of(d) in _FAILED_DEP
            ),
            None,
        )
        if failed is not None:
            dep_id, dep = failed
            cause = (
                f"dependency {dep_id} is missing"
                if dep is None
                else f"dependency {dep_id} ({dep.name}) {status_of(dep).value}"
                + (f": {dep.error_type}: {dep.error_message}" if dep.error_type else "")
            )

            def cancel(s: task_pb2.TaskState) -> None:
                lifecycle.cancel_for_dependency(s, cause)

            new = await self.store.transition(task_id, cancel, ttl=self.retention)
            if new is not None:
                await publish_event(
                    self.client,
                    app=self.app,
                    event=TaskEvent(
                        new.id,
                        new.name,
                        "cancelled",
                        error_type=new.error_type,
                        error_message=new.error_message,
                    ),
                )
                await self.payloads.settle(new)
            return new
        if all(d is not None and status_of(d) is TaskStatus.SUCCEEDED for d in deps):
            # Publish first (idempotent by id), then mark released: a crash in between
            # leaves a task that the next resolver releases again, never a lost one.
            await self.requests.publish([state])

            await self.store.transition(task_id, lifecycle.release)
        return None
