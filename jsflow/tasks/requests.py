"""Task requests: the one way a task is asked for, whoever submits it (a call, a routed
event, a dependency released, a replay).

A request (``task.requested.<token>.<id>``) is also the task's ``requested`` event. Several
requests go as one atomic batch; each carries ``Nats-Msg-Id`` so a repeated submit is
dropped by the server within its duplicate window.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING

from jsflow._js import codes, map_nats_errors
from jsflow._js import headers as server_headers
from jsflow._proto import task_pb2
from jsflow.errors import ServerError
from jsflow.observability import get_logger, inject_context, instruments, tracer
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
    message_ttl,
    request_subject,
    task_token,
)

if TYPE_CHECKING:
    from jsflow.client import Client

__all__ = ["Requests"]

_log = get_logger(__name__)


def _awaits_request(state: task_pb2.TaskState) -> bool:
    """Whether a stored task may still lack its request: released, pending, never started."""
    return (
        state.released
        and state.attempt == 0
        and not state.cancel_requested
        and status_of(state) is TaskStatus.PENDING
    )


class Requests:
    """Creates task states and publishes their requests, for the tasks of ``app``."""

    def __init__(self, client: Client, store: TaskStore, app: str) -> None:
        self.client = client
        self.store = store
        self.app = app

    async def submit(self, states: Sequence[task_pb2.TaskState]) -> None:
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
        if len(states) == 1:  # a single submit: no task for gather() to wrap it in
            revisions = [await self.store.create(states[0])]
        else:
            revisions = list(await asyncio.gather(*(self.store.create(s) for s in states)))
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
        await self.publish([s for s, _ in publish], revisions=[r for _, r in publish])

    async def publish(
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
            subject, body, headers = self.message(state, msg_id, rev)
            headers[H_TTL] = ttl
            messages.append((subject, body, headers))
        submitted = instruments().tasks_submitted
        for state in states:
            submitted.add(1, {"task": state.name})
        if len(messages) == 1:
            await self._publish_one(*messages[0])
            return
        try:
            await self._publish_batch(messages)
        except ServerError as exc:
            _log.warning("tasks.batch_publish_failed", error=str(exc))
            for message in messages:
                await self._publish_one(*message)

    def message(
        self, state: task_pb2.TaskState, msg_id: str, revision: int
    ) -> tuple[str, bytes, dict[str, str]]:
        """Subject, body and headers of a request: with a known revision the body is the
        whole state, else (as from other producers) the encoded arguments. The headers do
        not include the TTL (a schedule that fires the request must not carry one)."""
        if self.app != DEFAULT_APP:  # the stream dedupes by msg id: two apps, one task id
            msg_id = task_token(self.app, msg_id)
        headers = {H_TASK_ID: state.id, H_MSG_ID: msg_id}
        inject_context(headers)  # the submitter's trace continues in the worker
        if revision:
            headers[H_STATE_REVISION] = str(revision)
            body = bytes(state.SerializeToString())
        else:
            body = bytes(state.args)
            if state.args_ref:
                headers[H_ARGS_REF] = state.args_ref
        return request_subject(task_token(self.app, state.name), state.id), body, headers

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
