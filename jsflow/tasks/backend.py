"""``TaskBackend``: what App, TaskHandle, EventRouter, workers and the CLI share.

It publishes task requests (atomically when one event expands into several), moves task
states with compare-and-set, cancels, replays dead letters, and resolves dependencies.
Resolution is leaderless: every step is a compare-and-set on the dependent's state plus an
idempotent publish (``Nats-Msg-Id`` = task id), so any number of resolvers may race safely.

Retention: the write that makes a task terminal carries a per-key TTL (``retention``), so
finished tasks leave the bucket on their own; their artifacts get the same lifetime.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import uuid
from collections import deque
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from jsflow._js import codes, map_nats_errors
from jsflow._js import headers as server_headers
from jsflow._proto import task_pb2
from jsflow._validate import check_id, count, duration
from jsflow.errors import ConfigError, ServerError
from jsflow.observability import get_logger, tracer
from jsflow.tasks import lifecycle
from jsflow.tasks.artifacts import ArtifactStore
from jsflow.tasks.errors import DependencyCycleError, TaskNotFoundError
from jsflow.tasks.events import TaskEvent, publish_event
from jsflow.tasks.lifecycle import status_of
from jsflow.tasks.state import TaskStore
from jsflow.tasks.status import TaskStatus
from jsflow.tasks.streams import (
    DEFAULT_APP,
    H_ARGS_REF,
    H_MSG_ID,
    H_STATE_REVISION,
    H_TASK_ID,
    H_TTL,
    cancel_subject,
    ensure_streams,
    message_ttl,
    request_subject,
    state_bucket,
    task_token,
)

if TYPE_CHECKING:
    from jsflow.client import Client

__all__ = ["DEFAULT_ARTIFACT_THRESHOLD", "DEFAULT_RETENTION", "TaskBackend", "check_retention"]

DEFAULT_ARTIFACT_THRESHOLD = 256 * 1024
DEFAULT_RETENTION = 24 * 3600.0
# Artifacts outlive their task's state by this much, so a reader never sees a state whose
# artifact is already gone.
_ARTIFACT_MARGIN = 60.0
_MAX_GRAPH = 10_000
_FAILED_DEP = (TaskStatus.FAILED, TaskStatus.DEAD, TaskStatus.CANCELLED)
_log = get_logger(__name__)


def check_retention(retention: float | dt.timedelta | None) -> float | None:
    """Seconds of ``retention`` (a number or ``timedelta``; ``None``: keep forever), >= 1."""
    if retention is None:
        return None
    seconds = retention.total_seconds() if isinstance(retention, dt.timedelta) else retention
    return duration("retention", seconds, minimum=1.0, positive=False)


def _awaits_request(state: task_pb2.TaskState) -> bool:
    """Whether a stored task may still lack its request: released, pending, never started."""
    return (
        state.released
        and state.attempt == 0
        and not state.cancel_requested
        and status_of(state) is TaskStatus.PENDING
    )


class TaskBackend:
    """Shared machinery of the tasks layer for one client.

    ``retention`` (seconds, >= 1; ``None`` keeps finished tasks forever) is how long a task's
    state and artifacts stay after it finished. ``app`` scopes subjects, state and artifact
    names (:func:`task_token`, :func:`state_bucket`); the default app keeps the bare ones.
    """

    def __init__(
        self,
        client: Client,
        store: TaskStore,
        *,
        artifact_threshold: int = DEFAULT_ARTIFACT_THRESHOLD,
        retention: float | dt.timedelta | None = DEFAULT_RETENTION,
        app: str = DEFAULT_APP,
        replicas: int | None = None,
    ) -> None:
        count("artifact_threshold", artifact_threshold, minimum=1)
        self.app = app
        self.client = client
        self.store = store
        self.artifacts = ArtifactStore(client, replicas=replicas)
        self.artifact_threshold = artifact_threshold
        self.retention = check_retention(retention)

    @classmethod
    async def open(
        cls,
        client: Client,
        *,
        artifact_threshold: int = DEFAULT_ARTIFACT_THRESHOLD,
        retention: float | dt.timedelta | None = DEFAULT_RETENTION,
        request_max_age: float | None = None,
        app: str = DEFAULT_APP,
        replicas: int | None = None,
    ) -> TaskBackend:
        """Ensure the streams and the task-state bucket exist, and bind them.

        ``request_max_age`` (seconds): see :func:`ensure_streams` (``None``: what the task
        stream records, 7 days for a new one). ``replicas`` (default: the client's) applies
        to the task stream, the state bucket and the artifact bucket when created.
        """
        retention = check_retention(retention)
        await ensure_streams(client, max_age=request_max_age, replicas=replicas)
        store = await TaskStore.open(client, state_bucket(app), replicas=replicas)
        return cls(
            client,
            store,
            artifact_threshold=artifact_threshold,
            retention=retention,
            app=app,
            replicas=replicas,
        )

    def token(self, name: str) -> str:
        """The subject token of this backend's task ``name`` (see :func:`task_token`)."""
        return task_token(self.app, name)

    # -- payloads --------------------------------------------------------------------------

    @property
    def artifact_ttl(self) -> float | None:
        """Lifetime of the artifacts of a finished task (``None``: forever)."""
        return None if self.retention is None else self.retention + _ARTIFACT_MARGIN

    async def externalize(
        self, name: str, data: bytes, *, ttl: float | None = None
    ) -> tuple[bytes, str]:
        """``(data, "")``, or ``(b"", ref)`` after moving a large payload to the object store
        (expiring after ``ttl`` seconds when given)."""
        if len(data) <= self.artifacts.inline_limit(self.artifact_threshold):
            return data, ""
        if self.app != DEFAULT_APP:  # two apps may use one task id
            name = f"{self.app}/{name}"
        return b"", await self.artifacts.put(name, data, ttl=ttl)

    async def settle_artifacts(self, state: task_pb2.TaskState, args: bytes | None = None) -> None:
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

    async def resolve(self, data: bytes, ref: str) -> bytes:
        """The payload itself, fetching it from the object store when ``ref`` is set."""
        return await self.artifacts.get(ref) if ref else data

    # -- requests --------------------------------------------------------------------------

    async def request(self, states: Sequence[task_pb2.TaskState]) -> None:
        """Create the states (idempotent) and publish their requests, atomically when several.

        A request (``task.requested.<name>.<id>``) is also the task's ``requested`` event. It
        carries the state just created and its revision, so a worker starts the task with one
        compare-and-set and no read. Safe to repeat: an existing state is kept, and its request
        is published again only while the stored task still waits for one (released, never
        started: the first submit may have died before publishing); the server drops it
        within the duplicate window (``Nats-Msg-Id`` = task id) and a worker acks a late
        copy of a request for a task already started without running it. A task that waits
        for dependencies, runs or has finished is never requested again by a resubmit.
        """
        revisions = await asyncio.gather(*(self.store.create(s) for s in states))
        existing = [s.id for s, r in zip(states, revisions, strict=True) if not r]
        stored: dict[str, task_pb2.TaskState | None] = {}
        if existing:  # a resubmit: read what is there (the first submit pays nothing)
            found = await asyncio.gather(*map(self.store.get, existing))
            stored = dict(zip(existing, found, strict=True))
        publish: list[tuple[task_pb2.TaskState, int]] = []
        for state, revision in zip(states, revisions, strict=True):
            current = stored.get(state.id)
            if revision and state.released:  # created now: the request carries the state
                publish.append((state, revision))
            elif not revision and current is not None and _awaits_request(current):
                publish.append((current, 0))
        await self.publish_requests([s for s, _ in publish], revisions=[r for _, r in publish])

    async def publish_requests(
        self,
        states: Sequence[task_pb2.TaskState],
        *,
        msg_ids: Sequence[str] | None = None,
        revisions: Sequence[int] | None = None,
    ) -> None:
        """Publish ``task.requested.<name>.<id>`` for each state; several go as one atomic
        batch. ``revisions`` (0: unknown) are those of the states as they are in the store.
        Each carries the request max age as its TTL (``Nats-TTL``)."""
        if not states:
            return
        ttl = await message_ttl(self.client)
        ids = list(msg_ids) if msg_ids is not None else [s.id for s in states]
        revs = list(revisions) if revisions is not None else [0] * len(states)
        messages = []
        for state, msg_id, rev in zip(states, ids, revs, strict=True):
            subject, body, headers = self.request_message(state, msg_id, rev)
            headers[H_TTL] = ttl
            messages.append((subject, body, headers))
        if len(messages) == 1:
            await self._publish_one(*messages[0])
            return
        try:
            await self._publish_batch(messages)
        except ServerError as exc:
            _log.warning("tasks.batch_publish_failed", error=str(exc))
            for message in messages:
                await self._publish_one(*message)

    def request_message(
        self, state: task_pb2.TaskState, msg_id: str, revision: int
    ) -> tuple[str, bytes, dict[str, str]]:
        """Subject, body and headers of a request: with a known revision the body is the
        whole state, else (as from other producers) the encoded arguments. The headers do
        not include the TTL (a schedule that fires the request must not carry one)."""
        if self.app != DEFAULT_APP:  # the stream dedupes by msg id: two apps, one task id
            msg_id = task_token(self.app, msg_id)
        headers = {H_TASK_ID: state.id, H_MSG_ID: msg_id}
        if revision:
            headers[H_STATE_REVISION] = str(revision)
            body = bytes(state.SerializeToString())
        else:
            body = bytes(state.args)
            if state.args_ref:
                headers[H_ARGS_REF] = state.args_ref
        return request_subject(self.token(state.name), state.id), body, headers

    async def _publish_one(self, subject: str, body: bytes, headers: dict[str, str]) -> None:
        with map_nats_errors(subject=subject):
            await self.client.js.publish(subject, body, headers=headers)

    async def _publish_batch(self, messages: list[tuple[str, bytes, dict[str, str]]]) -> None:
        nc = self.client.nc
        batch_id = uuid.uuid4().hex
        last = len(messages) - 1
        with tracer().start_as_current_span("jsflow.tasks.publish_batch") as span:
            span.set_attribute("jsflow.batch_size", len(messages))
            with map_nats_errors(subject=messages[0][0]):
                for i, (subject, body, base) in enumerate(messages):
                    hdrs = dict(base)
                    hdrs[server_headers.BATCH_ID] = batch_id
                    hdrs[server_headers.BATCH_SEQUENCE] = str(i + 1)
                    if i < last:
                        await nc.publish(subject, body, headers=hdrs)
                        continue
                    hdrs[server_headers.BATCH_COMMIT] = "1"
                    reply = await nc.request(
                        subject, body, headers=hdrs, timeout=self.client.timeout
                    )
            answer = json.loads(reply.data or b"{}")
            error = answer.get("error")
            if error is None:
                return
            if error.get("err_code") == codes.BATCH_DUPLICATE_MSG:  # a redelivered expansion
                span.set_attribute("jsflow.duplicate", True)
                return
            raise ServerError(
                f"atomic batch rejected: {error.get('description')} (code {error.get('err_code')})"
            )

    # -- cancel and replay -----------------------------------------------------------------

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
            await self._signal_cancel(task_id)  # asked again: the first signal may be lost
            return True
        if status_of(new) is TaskStatus.CANCELLED:
            await self.finished(new)
        else:
            await self._signal_cancel(task_id)
        return True

    async def _signal_cancel(self, task_id: str) -> None:
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
        await self.resolve_dependents(state)
        await self.settle_artifacts(state)

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
        if new.args_ref and self.retention is not None:  # pending again: keep its arguments
            await self.artifacts.expire(new.args_ref, None)
        await self.publish_requests([new], msg_ids=[f"{new.id}-replay{new.replays}"])
        return True

    # -- dependencies ----------------------------------------------------------------------

    async def check_dependencies(self, task_id: str, depends_on: Iterable[str]) -> list[str]:
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

    async def submit_dependent(self, state: task_pb2.TaskState, deps: Sequence[str]) -> None:
        """Create a task that waits for ``deps``, register it with them, and try to release."""
        state.depends_on.extend(deps)
        state.released = False
        await self.request([state])

        def add(dep: task_pb2.TaskState) -> None:
            lifecycle.add_dependent(dep, state.id)  # a finished one: the _resolve below

        await asyncio.gather(*(self.store.transition(d, add) for d in deps))
        # A dependency may have finished before it learnt about us: resolve now as well.
        await self._resolve(state.id)

    async def resolve_dependents(self, state: task_pb2.TaskState) -> None:
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
                await self.settle_artifacts(new)
            return new
        if all(d is not None and status_of(d) is TaskStatus.SUCCEEDED for d in deps):
            # Publish first (idempotent by id), then mark released: a crash in between
            # leaves a task that the next resolver releases again, never a lost one.
            await self.publish_requests([state])

            await self.store.transition(task_id, lifecycle.release)
        return None
