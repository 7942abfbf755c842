"""Eager mode: a submitted task runs inline, in the submitter's process, before ``submit``
returns (what Celery's ``task_always_eager`` and taskiq's ``InMemoryBroker`` give unit tests).

Turn it on for a block with :meth:`jsflow.tasks.app.App.eager` (or the ``jsflow_eager``
fixture of :mod:`jsflow.testing`). Nothing about the task's record is simulated: the submit
creates its state and publishes its request through the server as always (the request is
its ``requested`` event and carries the submitter's trace context), then this module reads
that request back from the stream and hands it to the very
:class:`~jsflow.tasks.attempt.Attempt` a :class:`~jsflow.tasks.worker.Worker` makes of
each delivery. So the start, timeout,
heartbeat and cancel watch, the retry decision (``retries``, ``retry_on``, backoff), progress,
dependency results, the ``RUNNING``/``RETRYING``/``SUCCEEDED``/``FAILED``/``CANCELLED``/
``DEAD`` transitions, every event, the dependents' release and the artifacts are recorded
by the same code; ``result()`` raises the same :class:`TaskFailedError` or
:class:`TaskCancelledError`. Only the delivery is in process: an ack, nak or term settles
the in-process copy, and a nak (a retry) delivers it again, as the server would.

What differs from a worker:

* the task runs in the submitting coroutine (``submit_many``: its calls one after
  another), and ``concurrency`` and ``rate_limit`` are not applied;
* retry delays are skipped: a retry is delivered again at once (the backoff is still
  computed, and logged as ``retry_in_s``), so a test of a task with retries stays fast;
* an error of the backbone itself (the state store or the stream failing, not the task's
  code) is raised by ``submit``, where a worker would hand the request back and retry it;
  so is a cancel of the submitting coroutine (the task then stays ``RUNNING``);
* ``depends_on`` needs dependencies that have finished (any submitted eagerly have): one
  still pending or running raises :class:`TaskError` before the task is created; a failed
  one cancels the task, as with workers;
* ``submit_at``, ``submit_in``, ``schedule`` and :class:`~jsflow.tasks.router.EventRouter`
  requests are released by the server later and still need a worker;
* the request is in the stream as usual, so a worker running in the same app namespace
  receives it too: whichever starts the task first runs it (the start is a
  compare-and-set, the other copy is acked as a duplicate), and when that is the worker,
  ``submit`` returns before the outcome and ``result()`` waits for it as usual.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import os
import socket
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from jsflow._js import Msg, api, js_errors, map_nats_errors
from jsflow.errors import TaskError
from jsflow.observability import get_logger
from jsflow.tasks.attempt import Attempt, carried_state
from jsflow.tasks.backend import TaskBackend
from jsflow.tasks.lifecycle import status_of
from jsflow.tasks.status import TaskStatus
from jsflow.tasks.streams import TASK_STREAM, cancel_subject, request_subject

if TYPE_CHECKING:
    from jsflow.tasks.function import TaskFunction, TaskRegistry

__all__ = ["EagerMode"]

_log = get_logger(__name__)
_ACK_WAIT = 30.0  # a worker's default: paces the (no-op) heartbeat and the cancel watch


@dataclasses.dataclass
class _Delivery(Msg):
    """A request delivered in process: the stored message, its settlement recorded here."""

    settled: str = ""  # "ack", "nak" or "term" once the attempt settled it
    delay: float = 0.0  # the nak's delay (skipped)

    async def ack(self) -> None:
        """Record an ack."""
        self.settled = "ack"

    async def ack_sync(self, timeout: float = 1.0) -> Msg:
        """Record an ack (confirmed: nothing to wait for)."""
        self.settled = "ack"
        return self

    async def nak(self, delay: float | None = None) -> None:
        """Record a nak (a retry: delivered again)."""
        self.settled, self.delay = "nak", float(delay or 0.0)

    async def term(self) -> None:
        """Record a term (never delivered again)."""
        self.settled = "term"

    async def in_progress(self) -> None:
        """Nothing to tell: no server redelivers this copy."""


class EagerMode:
    """Runs the tasks an app submits inline, each through a worker's :class:`Attempt`.

    Made by :meth:`jsflow.tasks.app.App.eager`; see the module for what differs from a
    worker. Its attempts record ``eager-<host>-<pid>`` as their worker.
    """

    def __init__(self, app: TaskRegistry) -> None:
        self.app = app
        self.worker_id = f"eager-{socket.gethostname()}-{os.getpid()}"

    async def check_dependencies(self, backend: TaskBackend, task: str, deps: list[str]) -> None:
        """Raise :class:`TaskError` when one of ``deps`` has not finished: inline, nothing
        would run it before ``submit`` returns (checked before the task is created)."""
        states = await asyncio.gather(*(backend.store.get(d) for d in deps))
        waiting = [
            d for d, s in zip(deps, states, strict=True) if s is None or not status_of(s).terminal
        ]
        if waiting:
            raise TaskError(
                f"eager mode: task {task!r} depends on {', '.join(waiting)}, not finished "
                "yet; submit the dependencies in eager mode too (they finish before their "
                "submit returns), or run a worker instead of eager mode"
            )

    async def run(self, fn: TaskFunction[Any, Any], task_ids: Sequence[str]) -> None:
        """Execute the tasks ``task_ids`` of ``fn`` (just submitted) here, one after another,
        each until its request is settled for good (acked or terminated)."""
        backend = await self.app.backend()
        for task_id in task_ids:
            await self._run(backend, fn, task_id)

    async def _run(self, backend: TaskBackend, fn: TaskFunction[Any, Any], task_id: str) -> None:
        state = await backend.store.get(task_id)
        if (
            state is None
            or status_of(state) is not TaskStatus.PENDING
            or not state.released
            or state.cancel_requested
        ):
            # Finished already (a resubmit, a failed dependency), or another's to run.
            return
        stored = await self._request(backend, fn.name, task_id)
        attempt: Attempt | None = None

        async def on_cancel(_msg: Msg) -> None:
            if attempt is not None:
                attempt.request_cancel()

        subject = cancel_subject(backend.app, task_id)
        with map_nats_errors(subject=subject):
            sub = await backend.client.nc.subscribe(subject, cb=on_cancel)
        try:
            delivered = 0
            while True:
                delivered += 1
                msg = _Delivery(
                    backend.client.nc,
                    subject=stored.subject or "",
                    data=stored.data or b"",
                    headers=dict(stored.headers or {}),
                    _metadata=Msg.Metadata(
                        sequence=Msg.Metadata.SequencePair(
                            consumer=delivered, stream=stored.seq or 0
                        ),
                        num_pending=0,
                        num_delivered=delivered,
                        timestamp=stored.time or dt.datetime.now(dt.UTC),
                        stream=TASK_STREAM,
                        consumer="eager",
                    ),
                )
                attempt = Attempt(
                    backend, fn, msg, task_id, worker_id=self.worker_id, ack_wait=_ACK_WAIT
                )
                await attempt.run(carried_state(msg, task_id))
                if msg.settled != "nak":
                    # Acked or terminated: the outcome is recorded (or, unsettled, another
                    # worker owns the task and records it).
                    return
                _log.debug("tasks.eager_redelivery", task=fn.name, task_id=task_id)
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    @staticmethod
    async def _request(backend: TaskBackend, name: str, task_id: str) -> api.RawStreamMsg:
        """The task's request as the stream stores it (what a worker would be delivered)."""
        subject = request_subject(backend.token(name), task_id)
        with map_nats_errors(subject=subject):
            try:
                return await backend.client.js.get_msg(TASK_STREAM, subject=subject)
            except js_errors.NotFoundError:
                raise TaskError(
                    f"eager mode: the request of task {task_id} ({name}) is not in "
                    f"{TASK_STREAM} (expired, or purged)"
                ) from None
