"""One attempt at one task request: from the request's id to the settled message.

An :class:`Attempt` is what a :class:`~jsflow.tasks.worker.Worker` makes of each delivered
request. It starts the task (one compare-and-set on the state the request carries, or on
the stored one), runs the function with its timeout, heartbeat and cancel watch, records
the outcome through :mod:`~jsflow.tasks.lifecycle`, waits until every event it published
is stored, and only then acks, naks (a retry) or terminates the request.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING, Any, Protocol

from opentelemetry import trace

import jsflow.tasks.lifecycle as lifecycle  # noqa: PLR0402 -- not via the package: no cycle
from jsflow._js import Msg
from jsflow._proto import task_pb2
from jsflow._validate import check_id, shorten
from jsflow.errors import (
    CodecError,
    ConfigError,
    ControlLineTooLongError,
    InvalidKeyError,
    JsflowError,
    TaskError,
)
from jsflow.flow.consume import SettlePolicy
from jsflow.observability import (
    get_logger,
    instruments,
    optional_span,
)
from jsflow.store import KeyListener
from jsflow.tasks.backend import TaskBackend
from jsflow.tasks.calls import JSON_ANY
from jsflow.tasks.context import TaskContext, _current
from jsflow.tasks.errors import TaskTimeoutError
from jsflow.tasks.events import (
    PendingPublish,
    TaskEvent,
    event_stored,
    publish_event,
    start_event,
    wait_all,
)
from jsflow.tasks.lifecycle import (
    Declined,
    error_texts,
    new_state,
    set_status,
    status_of,
    traceback_text,
)
from jsflow.tasks.status import TaskStatus
from jsflow.tasks.streams import H_ARGS_REF, H_SCHEDULE_ID, H_STATE_REVISION, H_TASK_ID

if TYPE_CHECKING:
    from jsflow.tasks.function import TaskFunction

__all__ = ["CRASH_ALLOWANCE", "Attempt", "Limiter", "carried_state", "request_task_id", "terminate"]

_log = get_logger(__name__)
CRASH_ALLOWANCE = 3  # deliveries beyond retries+1 (crashed workers) before a task is DEAD
# An attempt that runs this long also watches its state for a cancel flag (a lost signal):
# shorter ones end before a missed cancel matters, and cost the shared watch nothing.
_LISTEN_AFTER = 1.0


class Limiter(Protocol):
    """What an attempt needs of a rate limiter (a :class:`jsflow.RateLimiter`)."""

    async def acquire(self, key: str) -> Any:
        """Wait until one start is admitted."""
        ...


class Attempt:
    """One delivery of a request for task ``task_id`` of ``fn``, run by worker ``worker_id``.

    ``ack_wait`` paces the heartbeat (every third of it); ``limiter`` admits starts across
    workers. Cancel it with :meth:`request_cancel` (a cancel signal, or the state's flag).
    """

    def __init__(
        self,
        backend: TaskBackend,
        fn: TaskFunction[Any, Any],
        msg: Msg,
        task_id: str,
        *,
        worker_id: str,
        ack_wait: float,
        limiter: Limiter | None = None,
    ) -> None:
        self.backend = backend
        self.fn = fn
        self.msg = msg
        self.task_id = task_id
        self.worker_id = worker_id
        self.ack_wait = ack_wait
        self.limiter = limiter
        self.cancel_requested = False
        self.task: asyncio.Task[Any] | None = None  # the function's run, once started
        self.pending: list[PendingPublish] = []  # events published, awaiting their ack
        self.args: bytes | None = None  # arguments fetched from an artifact
        self.written: tuple[task_pb2.TaskState, int] | None = None  # the start it wrote
        self.listener: KeyListener[task_pb2.TaskState] | None = None  # the state's changes
        self._began: float | None = None  # when the function started (monotonic)
        self._ran: float | None = None  # how long it ran

    def request_cancel(self) -> None:
        """Interrupt the function (now if it runs, at its start otherwise)."""
        self.cancel_requested = True
        if self.task is not None and not self.task.done():
            self.task.cancel()

    async def run(self, carried: tuple[task_pb2.TaskState, int] | None) -> None:
        """Start, execute and settle this attempt (``carried``: the state the request
        carries and its revision, if any)."""
        attributes = {
            "jsflow.task": self.fn.name,
            "jsflow.task_id": self.task_id,
            "jsflow.delivery": int(self.msg.metadata.num_delivered or 1),
        }
        with optional_span(
            "jsflow.tasks.execute",
            attributes,
            headers=self.msg.headers or {},
            kind=trace.SpanKind.CONSUMER,
        ):
            await self._run(carried)

    @property
    def _labels(self) -> dict[str, str]:
        return {"task": self.fn.name}

    @staticmethod
    def _trace_ids() -> dict[str, str]:
        """The current trace id, to correlate log lines with traces (nothing without one)."""
        ctx = trace.get_current_span().get_span_context()
        return {"trace_id": format(ctx.trace_id, "032x")} if ctx.is_valid else {}

    async def _run(self, carried: tuple[task_pb2.TaskState, int] | None) -> None:
        backend = self.backend
        try:
            started = None
            if carried is not None and self.msg.metadata.num_delivered == 1:
                started = await self._start_carried(*carried)
            if started is None:
                started = await self._start_read(carried)
                if started is None:
                    return
            # Announce the start without waiting: its ack is awaited with the outcome's.
            self.pending.append(
                await start_event(backend.client, self._event(started, "started"), app=backend.app)
            )
            if started.attempt == 1 and started.created_at:
                wait = max(0.0, time.time() - started.created_at)
                instruments().tasks_queue_wait.record(wait, self._labels)
            instruments().tasks_started.add(1, self._labels)
            _log.info(
                "tasks.started",
                task=self.fn.name,
                task_id=self.task_id,
                attempt=started.attempt,
                **self._trace_ids(),
            )
            await self._execute(started)
        finally:
            if self.listener is not None:
                self.listener.close()

    async def _start_carried(
        self, state: task_pb2.TaskState, revision: int
    ) -> task_pb2.TaskState | None:
        """Start a first delivery from the state its request carries: one compare-and-set
        on the revision it was created at, no read. ``None`` when anything changed since."""
        if status_of(state) is not TaskStatus.PENDING or state.cancel_requested:
            return None
        lifecycle.start(state, worker=self.worker_id)
        written = await self.backend.store.compare_and_set(state, revision)
        if not written:
            return None
        self.written = (state, written)
        return state

    async def _start_read(
        self, carried: tuple[task_pb2.TaskState, int] | None
    ) -> task_pb2.TaskState | None:
        """Start from the stored state (redeliveries, retries, requests of other producers);
        ``None`` when this delivery ends here (already finished, cancelled, dead, lost race)."""
        backend = self.backend
        msg, fn, task_id = self.msg, self.fn, self.task_id
        store = backend.store
        headers = msg.headers or {}
        meta = msg.metadata
        state = await store.get(task_id)
        if state is not None and state.name != fn.name:
            # The id of another task's state (a forged or misrouted request): running this
            # function on it would finish that task with this one's outcome. Leave it alone.
            await terminate(
                msg, fn.name, "names another task's id", task_id=task_id, owner=state.name
            )
            return None
        if state is None:  # scheduled (cron) requests and requests from other producers
            if carried is not None:
                fresh = task_pb2.TaskState()
                fresh.CopyFrom(carried[0])
                fresh.attempt, fresh.worker, fresh.started_at = 0, "", 0.0
                set_status(fresh, TaskStatus.PENDING)
            else:
                fresh = new_state(task_id, fn.name, msg.data or b"", headers.get(H_ARGS_REF, ""))
            await store.create(fresh)
            state = await store.get(task_id)
            if state is None:
                return None
        status = status_of(state)
        if status.terminal:  # a redelivery after the outcome was recorded: finish the job
            await self._announce_terminal(state)
            await backend.dag.on_finished(state)
            await backend.payloads.settle(state)
            await SettlePolicy.ack(msg)
            return None
        if state.cancel_requested or status not in lifecycle.RUNNABLE:
            await self._finish_cancelled(state, attempt=None)
            return None
        if meta.num_delivered == 1 and status is not TaskStatus.PENDING:
            # A second request for a task another request already started (a resubmit
            # after the duplicate window, a republished dependency release): that request
            # owns the task until acked and is redelivered if its worker dies, so this
            # copy must not start a concurrent attempt. Only a redelivery may take over.
            _log.info("tasks.duplicate_request", task=fn.name, task_id=task_id, status=status.value)
            await SettlePolicy.ack(msg)
            return None
        if meta.num_delivered > fn.options.retries + 1 + CRASH_ALLOWANCE:
            await self._finish(
                TaskStatus.DEAD,
                None,
                "DeliveryLimit",
                error_message=f"delivered {meta.num_delivered} times without finishing",
            )
            return None
        read_attempt = state.attempt

        def start(s: task_pb2.TaskState) -> None:
            lifecycle.start(s, worker=self.worker_id, attempt=read_attempt)

        started = await store.transition(task_id, start)
        if started is None:  # another worker or a canceller moved first
            current = await store.get(task_id)
            if current is not None and status_of(current).terminal:
                await SettlePolicy.ack(msg)
        return started

    async def _execute(self, state: task_pb2.TaskState) -> None:
        fn = self.fn
        backend = self.backend
        attempt = state.attempt
        try:
            data = await backend.payloads.fetch(bytes(state.args), state.args_ref)
            if state.args_ref:
                self.args = data
            args, kwargs = fn.codec.decode_args(data)
        except (CodecError, ConfigError, InvalidKeyError, ControlLineTooLongError) as exc:
            # Arguments that cannot be read (bad encoding, an illegal artifact reference)
            # never will be: the task is dead, not retried.
            await self._finish(TaskStatus.DEAD, attempt, type(exc).__name__, error_message=str(exc))
            return
        # The heartbeat does nothing before its first beat (or listen): a timer starts it
        # then, so an attempt shorter than that (most) costs no task of its own.
        heartbeat: asyncio.Task[None] | None = None
        loop = asyncio.get_running_loop()
        began = time.monotonic()

        def start_heartbeat() -> None:
            nonlocal heartbeat
            heartbeat = loop.create_task(self._heartbeat(began))

        ctx = TaskContext(
            backend.client,
            state.id,
            state.name,
            attempt,
            app=backend.app,
            depends_on=tuple(state.depends_on),
            load_result=self._dependency_result,
        )
        timer = loop.call_later(min(self.ack_wait / 3, _LISTEN_AFTER), start_heartbeat)
        try:
            if self.limiter is not None:
                await self.limiter.acquire("starts")
            inner = asyncio.get_running_loop().create_task(self._invoke(args, kwargs, ctx))
            self.task = inner
            if self.cancel_requested:
                inner.cancel()
            self._began = time.monotonic()
            result = await inner
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if self.cancel_requested and (current is None or not current.cancelling()):
                await self._finish_cancelled(state, attempt=attempt)
                return
            raise
        except Exception as exc:
            self._record_run()
            await self._failed(state, exc)
            return
        finally:
            timer.cancel()
            if heartbeat is not None:
                heartbeat.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await heartbeat
        self._record_run()
        try:
            payload = fn.codec.encode_result(result)
            data, ref = await backend.payloads.put(
                f"{state.id}.result", payload, ttl=backend.payloads.artifact_ttl
            )
        except JsflowError as exc:
            await self._finish(
                TaskStatus.FAILED,
                attempt,
                type(exc).__name__,
                error_message=str(exc),
            )
            return
        await self._finish(TaskStatus.SUCCEEDED, attempt, result=(data, ref))

    async def _invoke(self, args: tuple[Any, ...], kwargs: dict[str, Any], ctx: TaskContext) -> Any:
        fn = self.fn
        _current.set(ctx)
        timeout = fn.options.timeout
        if timeout is None:
            return await fn.fn(*args, **kwargs)
        scope = asyncio.timeout(timeout)
        try:
            async with scope:
                return await fn.fn(*args, **kwargs)
        except TimeoutError as exc:
            if scope.expired():
                raise TaskTimeoutError(
                    f"task {ctx.id} ({ctx.name}) timed out after {timeout}s"
                ) from exc
            raise

    async def _heartbeat(self, began: float) -> None:
        """Tell the server the attempt is alive every ``ack_wait / 3`` seconds; once it has
        run ``_LISTEN_AFTER`` seconds, also cancel it when its state's ``cancel_requested``
        flag shows up on the store's shared watch (a lost core cancel signal). ``began``:
        when the attempt started (monotonic), which the schedule counts from."""
        interval = self.ack_wait / 3
        this = asyncio.current_task()
        due = began + interval
        listen_at = began + min(_LISTEN_AFTER, interval)
        listener = None
        while True:
            now = time.monotonic()
            if listener is None and now >= listen_at:
                listener = await self._listen()
                listen_at = float("inf") if listener is not None else now + interval
                continue
            remaining = min(due, listen_at) - now
            if remaining > 0:
                if listener is None:
                    await asyncio.sleep(remaining)
                    continue
                change = await listener.wait(remaining)
                if this is not None and this.cancelling():
                    # wait_for (3.11) may return a change that raced our cancellation
                    # instead of raising: honour the cancel, or this loop never ends.
                    raise asyncio.CancelledError
                if change is not None:
                    if change.value is not None and change.value.cancel_requested:
                        self.request_cancel()
                    continue
                if time.monotonic() < due:
                    continue
            due = time.monotonic() + interval
            with contextlib.suppress(Exception):
                await self.msg.in_progress()

    async def _listen(self) -> KeyListener[task_pb2.TaskState] | None:
        """Register the attempt's listener on the shared watch, then read the state once
        (a flag written before the listener existed); ``None`` when that failed."""
        task_id = self.task_id
        store = self.backend.store
        try:
            self.listener = await store.listen(task_id)
            state = await store.get(task_id)
        except JsflowError as exc:  # store closing, connection trouble: retried later
            _log.warning("tasks.cancel_listen_failed", task_id=task_id, error=repr(exc))
            return self.listener
        if state is not None and state.cancel_requested:
            self.request_cancel()
        return self.listener

    async def _dependency_result(self, task_id: str) -> Any:
        """The result of dependency ``task_id`` (it succeeded: this task was released)."""
        state = await self.backend.store.get(task_id)
        if state is None or status_of(state) is not TaskStatus.SUCCEEDED:
            raise TaskError(f"dependency {task_id} has no result (it is gone or not succeeded)")
        data = await self.backend.payloads.fetch(bytes(state.result), state.result_ref)
        owner = self.fn.app.tasks.get(state.name)
        if owner is None:
            return JSON_ANY.decode(data) if data else None
        return owner.codec.decode_result(data)

    def _record_run(self) -> None:
        if self._began is not None:
            self._ran = time.monotonic() - self._began
            instruments().tasks_run_duration.record(self._ran, self._labels)
            self._began = None

    # -- outcomes --------------------------------------------------------------------------

    async def _failed(self, state: task_pb2.TaskState, exc: Exception) -> None:
        msg = self.msg
        fn = self.fn
        attempt = state.attempt
        error_type, error_message = error_texts(exc)
        tb = traceback_text(exc)
        if attempt > fn.options.retries or not fn.options.retryable(exc):
            await self._finish(
                TaskStatus.FAILED,
                attempt,
                error_type,
                error_message=error_message,
                traceback=tb,
            )
            return
        cancelled = self.cancel_requested

        def retry(s: task_pb2.TaskState) -> None:
            lifecycle.retry(
                s,
                attempt=attempt,
                error_type=error_type,
                error_message=error_message,
                traceback=tb,
            )

        new = None
        if not cancelled:
            try:
                new = await self.backend.store.transition(state.id, retry)
            except lifecycle.CancelRequested:  # a cancelled task is not retried
                cancelled = True
        if cancelled:
            await self._finish_cancelled(state, attempt=attempt)
            return
        if new is None:
            return
        delay = fn.options.retry_delay(attempt)
        await self._flush(self._event(new, "retrying"))
        await SettlePolicy.nak(msg, delay)
        instruments().tasks_retried.add(1, self._labels)
        _log.info(
            "tasks.retrying",
            task=fn.name,
            task_id=state.id,
            attempt=attempt,
            retry_in_s=round(delay, 3),
            error=f"{error_type}: {error_message[:200]}",
            **self._trace_ids(),
        )

    async def _finish_cancelled(self, state: task_pb2.TaskState, *, attempt: int | None) -> None:
        await self._finish(
            TaskStatus.CANCELLED,
            attempt,
            "TaskCancelledError",
            error_message="cancelled",
        )

    async def _finish(
        self,
        status: TaskStatus,
        attempt: int | None,
        error_type: str = "",
        *,
        error_message: str = "",
        traceback: str = "",
        result: tuple[bytes, str] | None = None,
    ) -> None:
        """Record a terminal outcome (CAS on the attempt, carrying the retention TTL),
        announce it, resolve dependents, settle artifacts, wait for every event's ack, then
        ack. A lost CAS means another attempt owns the task: leave the message to it."""
        backend = self.backend

        def finish(s: task_pb2.TaskState) -> None:
            lifecycle.finish(
                s,
                status,
                attempt=attempt,
                error_type=error_type,
                error_message=error_message,
                traceback=traceback,
                result=result,
            )

        msg, task_id = self.msg, self.task_id
        new = None
        if self.written is not None and attempt is not None:
            # Finish what this worker wrote, by its revision: one write, no read or queue.
            # Anything that changed it since (a cancel request) makes this miss: then the
            # general compare-and-set decides.
            base, revision = self.written
            candidate = task_pb2.TaskState()
            candidate.CopyFrom(base)
            with contextlib.suppress(Declined):
                finish(candidate)
                if await backend.store.compare_and_set(candidate, revision, ttl=backend.retention):
                    new = candidate
        if new is None:
            new = await backend.store.transition(task_id, finish, ttl=backend.retention)
        if new is None:
            current = await backend.store.get(task_id)
            if current is not None and status_of(current).terminal and attempt is None:
                await SettlePolicy.ack(msg)
            return
        announce = await start_event(
            backend.client, self._event(new, _terminal_kind(status)), app=backend.app
        )
        await backend.dag.on_finished(new)
        await backend.payloads.settle(new, self.args)
        await self._flush(announce)
        self._log_outcome(status, new)
        if status is TaskStatus.DEAD:
            await SettlePolicy.term(msg)
        else:
            await SettlePolicy.ack(msg)

    def _log_outcome(self, status: TaskStatus, state: task_pb2.TaskState) -> None:
        """The outcome's log line and counter (once it is recorded and announced)."""
        counter = {
            TaskStatus.SUCCEEDED: instruments().tasks_succeeded,
            TaskStatus.FAILED: instruments().tasks_failed,
            TaskStatus.DEAD: instruments().tasks_dead,
            TaskStatus.CANCELLED: instruments().tasks_cancelled,
        }[status]
        counter.add(1, self._labels)
        fields: dict[str, Any] = {
            "task": self.fn.name,
            "task_id": self.task_id,
            "attempt": state.attempt,
            **self._trace_ids(),
        }
        if self._ran is not None:
            fields["duration_ms"] = round(self._ran * 1000, 1)
        if status is TaskStatus.SUCCEEDED:
            _log.info("tasks.succeeded", **fields)
        elif status is TaskStatus.CANCELLED:
            _log.info("tasks.cancelled", **fields)
        else:
            error = f"{state.error_type}: {state.error_message[:200]}"
            _log.warning(f"tasks.{status.value.lower()}", error=error, **fields)

    async def _announce_terminal(self, state: task_pb2.TaskState) -> None:
        """Publish the terminal event of a finished task unless the stream has it: the
        state was written but its event was lost (a publish that failed in a failover left
        the request unacked, so it came back). Events are as durable as the state."""
        backend = self.backend
        kind = _terminal_kind(status_of(state))
        if not await event_stored(backend.client, kind, backend.token(state.name), state.id):
            _log.info("tasks.terminal_event_republished", task_id=state.id, kind=kind)
            await publish_event(backend.client, self._event(state, kind), app=backend.app)

    @staticmethod
    def _event(state: task_pb2.TaskState, kind: str) -> TaskEvent:
        return TaskEvent(
            state.id,
            state.name,
            kind,
            attempt=state.attempt,
            error_type=state.error_type if kind != "completed" else "",
            error_message=state.error_message if kind != "completed" else "",
        )

    async def _flush(self, last: PendingPublish | TaskEvent) -> None:
        """Publish (or take the pending) ``last`` and wait for the acks of every event this
        attempt published: all stored before the request is acked or nak'ed."""
        if isinstance(last, TaskEvent):
            last = await start_event(self.backend.client, last, app=self.backend.app)
        pending, self.pending = [*self.pending, last], []
        await wait_all(pending)


def request_task_id(msg: Msg) -> str:
    """The id of the task a request is for, from its headers, validated (never trusted):
    ``Jsflow-Task-Id``, else ``<Jsflow-Schedule-Id>-<stream sequence>`` (a fired schedule),
    else ``msg-<stream sequence>`` (a bare request of another producer). Raises
    :class:`InvalidNameError` for an id no key or subject may carry (empty, too long,
    illegal characters)."""
    headers = msg.headers or {}
    sequence = msg.metadata.sequence.stream
    if H_TASK_ID in headers:
        return check_id("task id", headers[H_TASK_ID])
    if H_SCHEDULE_ID in headers:
        schedule_id = check_id("schedule id", headers[H_SCHEDULE_ID])
        return check_id("task id", f"{schedule_id}-{sequence}")
    return f"msg-{sequence}"


def _terminal_kind(status: TaskStatus) -> str:
    """The event kind announcing terminal ``status``."""
    return "completed" if status is TaskStatus.SUCCEEDED else status.value.lower()


async def terminate(msg: Msg, task: str, reason: str, **detail: str) -> None:
    """End a request that no attempt can ever process: logged once, never redelivered."""
    meta = msg.metadata
    _log.warning(
        "tasks.request_terminated",
        task=task,
        reason=reason,
        stream_seq=meta.sequence.stream,
        **{k: shorten(v, 200) for k, v in detail.items()},
    )
    await SettlePolicy.term(msg)


def carried_state(msg: Msg, task_id: str) -> tuple[task_pb2.TaskState, int] | None:
    """The state (and its revision) a request carries, or ``None``."""
    revision = (msg.headers or {}).get(H_STATE_REVISION)
    if not revision:
        return None
    state = task_pb2.TaskState()
    try:
        state.ParseFromString(msg.data or b"")
        rev = int(revision)
    except Exception:
        return None
    if state.id != task_id or rev < 1:
        return None
    return state, rev
