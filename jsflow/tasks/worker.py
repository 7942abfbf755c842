"""``Worker``: executes an app's tasks from one shared durable pull consumer per task name.

Every status change is a compare-and-set on the task's state, conditioned on the attempt
number this worker started, so two workers can never both complete one task. Messages are
acked only after the outcome is recorded (at-least-once); a worker killed mid-task stops
sending in-progress heartbeats and the server redelivers the request after ``ack_wait``.

A cancel reaches a running attempt two ways: the canceller's core NATS signal (fast), and
the ``cancel_requested`` flag in the task's state, which an attempt running longer than a
second learns through the task store's one shared watch (``ObjectStore.listen``: a listener
per such attempt, no server consumer of its own), so a missed signal still cancels it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any

from jsflow._js import Msg, Puller, api, js_errors, map_nats_errors
from jsflow._proto import task_pb2
from jsflow._validate import check_id, count, number, shorten
from jsflow.errors import (
    CodecError,
    ConfigError,
    ConnectionClosedError,
    ControlLineTooLongError,
    InvalidKeyError,
    JsflowError,
    ServerError,
)
from jsflow.flow.consume import SettlePolicy, fetch_loop
from jsflow.observability import get_logger, tracer
from jsflow.store import KeyListener
from jsflow.tasks import lifecycle
from jsflow.tasks.backend import TaskBackend
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
    MAX_ERROR_MESSAGE,
    MAX_ERROR_TYPE,
    Declined,
    error_texts,
    new_state,
    set_status,
    status_of,
)
from jsflow.tasks.status import TaskStatus
from jsflow.tasks.streams import (
    DEFAULT_APP,
    H_ARGS_REF,
    H_SCHEDULE_ID,
    H_STATE_REVISION,
    H_TASK_ID,
    TASK_STREAM,
    cancel_subject,
    request_filters,
    task_token,
)

if TYPE_CHECKING:
    from jsflow.tasks.function import TaskFunction, TaskRegistry

__all__ = ["MAX_ERROR_MESSAGE", "MAX_ERROR_TYPE", "Worker", "error_texts"]

_log = get_logger(__name__)
_MAX_BATCH = 64
_FETCH_WAIT = 1.0
_BATCH_WAIT = 0.05
_CRASH_ALLOWANCE = 3  # deliveries beyond retries+1 (crashed workers) before a task is DEAD
# The server stops delivering a request after this many deliveries beyond the point where
# the worker records it DEAD itself: a backstop for requests no attempt can settle.
_SERVER_MARGIN = 2
_MAX_CONCURRENCY = 100_000
_MAX_ACK_WAIT = 24 * 3600.0  # a heartbeat every ack_wait/3 keeps any attempt alive anyway
_SLOT_WAIT = 1.0  # how often a loop waiting for a free slot checks its connection
# Error texts stored in state and events are bounded: a huge exception message must not make
# the outcome unrecordable (a state write past max_payload, retried until DeliveryLimit).
# An attempt that runs this long also watches its state for a cancel flag (a lost signal):
# shorter ones end before a missed cancel matters, and cost the shared watch nothing.
_LISTEN_AFTER = 1.0


class _Slots:
    """A counter of free execution slots that can be taken several at a time."""

    def __init__(self, size: int) -> None:
        self.free = size
        self._event = asyncio.Event()
        self._event.set()

    async def take(self, most: int, timeout: float | None = None) -> int:
        """Take up to ``most`` slots, waiting for one; 0 when ``timeout`` passed first."""
        while self.free <= 0:
            self._event.clear()
            try:
                async with asyncio.timeout(timeout):
                    await self._event.wait()
            except TimeoutError:
                return 0
        taken = min(most, self.free)
        self.free -= taken
        return taken

    def try_take(self, most: int) -> int:
        taken = max(0, min(most, self.free))
        self.free -= taken
        return taken

    def give(self, n: int) -> None:
        if n:
            self.free += n
            self._event.set()


@dataclass(slots=True)
class _Running:
    cancel_requested: bool = False
    task: asyncio.Task[Any] | None = None
    pending: list[PendingPublish] = field(default_factory=list)  # events awaiting their ack
    args: bytes | None = None  # arguments fetched from an artifact
    written: tuple[task_pb2.TaskState, int] | None = None  # the start this worker wrote
    listener: KeyListener[task_pb2.TaskState] | None = None  # the state's changes

    def request_cancel(self) -> None:
        """Mark the attempt cancelled and interrupt its coroutine if it runs already."""
        self.cancel_requested = True
        if self.task is not None and not self.task.done():
            self.task.cancel()


def durable_name(task_name: str, app: str = DEFAULT_APP) -> str:
    """The one durable consumer shared by every worker of task ``task_name`` of ``app``
    (``jsflow_task_<name>`` for the default app, ``jsflow_task_<app>~<name>`` otherwise)."""
    return f"jsflow_task_{task_token(app, task_name)}"


def _limiter_name(task_name: str, app: str) -> str:
    if app == DEFAULT_APP:
        return f"jsflow-task-{task_name}"
    return f"jsflow-app{len(app)}-{app}-{task_name}"  # the length keeps it unambiguous


class Worker:
    """Runs an app's tasks until stopped; ``async with app.worker(...)`` or ``await run()``.

    ``concurrency`` bounds attempts running at once in this worker. Every worker of a task
    name shares that name's one durable consumer, whatever the number of processes.

    Requests are read by the shared :func:`jsflow.flow.consume.fetch_loop` and settled by
    the task's recorded state: acked once its outcome and events are stored, nak'ed with the
    task's backoff to retry, terminated when no attempt could ever process them (an illegal
    id, another task's state) or when it is ``DEAD``. A redelivered request of a finished
    task re-publishes its terminal event when the stream lacks it, so followers never wait
    for an end that was recorded but not announced.
    """

    def __init__(
        self,
        app: TaskRegistry,
        *,
        concurrency: int = 10,
        ack_wait: float = 30.0,
        tasks: Iterable[str] | None = None,
    ) -> None:
        concurrency = count("concurrency", concurrency, minimum=1, maximum=_MAX_CONCURRENCY)
        ack_wait = number("ack_wait", ack_wait, minimum=1.0, maximum=_MAX_ACK_WAIT)
        names = list(tasks) if tasks is not None else list(app.tasks)
        unknown = [n for n in names if n not in app.tasks]
        if unknown:
            raise ConfigError(f"tasks not registered in app {app.name!r}: {unknown}")
        if not names:
            raise ConfigError(f"app {app.name!r} has no tasks to run")
        self.app = app
        self.id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.concurrency = concurrency
        self.ack_wait = ack_wait
        self._names = names
        self._slots = _Slots(concurrency)
        self._running: dict[str, _Running] = {}
        self._loops: list[asyncio.Task[None]] = []
        self._inflight: set[asyncio.Task[None]] = set()
        self._subs: list[Any] = []
        self._pullers: list[Puller] = []
        self._limiters: dict[str, Any] = {}
        self._backend: TaskBackend | None = None
        self._stopping = False
        self._stop_event = asyncio.Event()
        self._started = False

    @property
    def task_names(self) -> list[str]:
        """The names of the tasks this worker runs."""
        return list(self._names)

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind the consumers, listen for cancels and start fetching."""
        if self._started:
            return
        self._started = True
        try:
            await self._start()
        except BaseException:
            await self.stop()  # loops already started must not outlive a failed start
            raise

    async def _start(self) -> None:
        backend = self._backend = await self.app.backend()
        client = backend.client
        for name in self._names:
            fn = self.app.tasks[name]
            if fn.options.rate_limit is not None:
                rate, per = fn.options.rate_limit
                self._limiters[name] = client.rate_limiter(
                    _limiter_name(name, backend.app), rate, per=per
                )
        cancels = cancel_subject(backend.app)
        with map_nats_errors(subject=cancels):
            self._subs.append(await client.nc.subscribe(cancels, cb=self._on_cancel))
        for name in self._names:
            fn = self.app.tasks[name]
            puller = await self._bind(fn)
            own = _Slots(fn.options.concurrency) if fn.options.concurrency else None
            loop = asyncio.get_running_loop().create_task(self._fetch_loop(fn, puller, own))
            self._loops.append(loop)
        _log.info("tasks.worker_started", worker=self.id, tasks=self._names)

    async def run(self) -> None:
        """Execute tasks until cancelled, then stop gracefully.

        Raises :class:`ConnectionClosedError` within seconds once the client's connection
        is closed for good (``client.close()``, reconnects given up), so a supervisor can
        start a new worker on a new connection.
        """
        await self.start()
        try:
            await asyncio.gather(*self._loops)
        except ConnectionClosedError:
            # Nothing can be recorded or acked any more: do not wait for running attempts.
            await self.stop(grace=0)
            raise
        finally:
            await self.stop()

    async def stop(self, grace: float = 5.0) -> None:
        """Stop fetching, give in-flight attempts ``grace`` seconds, cancel the rest.

        Cancelled attempts are not acked: the server redelivers them to another worker.
        """
        if self._stopping:
            return
        self._stopping = True
        self._stop_event.set()
        for loop in self._loops:
            loop.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        if self._inflight:
            _done, pending = await asyncio.wait(list(self._inflight), timeout=grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        for sub in self._subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        self._subs.clear()
        for puller in self._pullers:
            with contextlib.suppress(Exception):
                await puller.close()
        self._pullers.clear()

    async def __aenter__(self) -> Worker:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # -- consuming -------------------------------------------------------------------------

    async def _bind(self, fn: TaskFunction[Any, Any]) -> Puller:
        """Create (or update) the task's durable consumer and start pulling from it.

        Any refusal other than one for a consumer that exists (with a config this worker
        may not change) fails the start, naming the durable and the server's reason: a
        worker without its consumer would "run" and never execute anything.
        """
        assert self._backend is not None
        client = self._backend.client
        js = client.js
        durable = durable_name(fn.name, self._backend.app)
        filters = request_filters(self._backend.token(fn.name))
        config = api.ConsumerConfig(
            durable_name=durable,
            filter_subjects=filters,
            ack_policy=api.AckPolicy.EXPLICIT,
            deliver_policy=api.DeliverPolicy.ALL,
            ack_wait=self.ack_wait,
            # A backstop: the worker records a task DEAD (and terminates its request) after
            # retries + 1 + _CRASH_ALLOWANCE deliveries; the server stops a little later.
            max_deliver=fn.options.retries + 1 + _CRASH_ALLOWANCE + _SERVER_MARGIN,
            max_ack_pending=10_000,
        )
        with map_nats_errors(subject=filters[0]):
            try:
                await js.add_consumer(TASK_STREAM, config)
            except js_errors.APIError as exc:
                await self._check_consumer_exists(durable, exc)
        puller = Puller(client.nc, js, TASK_STREAM, durable)
        with map_nats_errors(subject=filters[0]):
            await puller.start()
        self._pullers.append(puller)
        return puller

    async def _check_consumer_exists(self, durable: str, exc: js_errors.APIError) -> None:
        """After ``add_consumer`` was refused: go on only when ``durable`` exists."""
        assert self._backend is not None
        try:
            await self._backend.client.js.consumer_info(TASK_STREAM, durable)
        except js_errors.NotFoundError:
            raise ServerError(
                f"cannot create the consumer {durable!r} on stream {TASK_STREAM}: "
                f"{exc.description or exc} (code {exc.err_code})"
            ) from exc
        # Exists with a config the server will not update (an older jsflow's): share it.
        _log.info("tasks.consumer_exists", consumer=durable, detail=exc.description)

    async def _fetch_loop(
        self, fn: TaskFunction[Any, Any], puller: Puller, own: _Slots | None
    ) -> None:
        """Fetch requests through the shared consume loop, with capacity reserved first.

        A fetch asks for one request (one slot) plus, when the last batch reported more
        pending, as many more as free slots allow: holding a single slot while idle keeps
        one quiet task name from starving the others. Ends with
        :class:`ConnectionClosedError` once the connection is closed for good.
        """
        assert self._backend is not None
        pending = 0  # what the consumer reported pending after the last batch

        async def reserve() -> int:
            await asyncio.sleep(0)  # let other task names' loops take slots freed just now
            if not await self._take_slot(own):
                return 0  # none freed in a while: the loop checks stop and its connection
            extra = self._slots.try_take(min(pending, _MAX_BATCH - 1))
            if own is not None:
                allowed = own.try_take(extra)
                self._slots.give(extra - allowed)
                extra = allowed
            return 1 + extra

        def deliver(msgs: list[Msg]) -> None:
            nonlocal pending
            pending = int(msgs[-1].metadata.num_pending)
            self._dispatch(fn, msgs, own)

        def wait() -> float:
            # Poll briefly when every slot is taken, so an idle name yields its slot soon.
            return _BATCH_WAIT * 2 if self._slots.free == 0 else _FETCH_WAIT

        await fetch_loop(
            puller,
            deliver,
            client=self._backend.client,
            stop=self._stop_event,
            reserve=reserve,
            release=lambda n: self._give(n, own),
            timeout=wait,
            name=durable_name(fn.name, self._backend.app),
        )

    async def _take_slot(self, own: _Slots | None) -> bool:
        """One slot of the task's own limit and one of the worker's; ``False`` when none
        freed within ``_SLOT_WAIT`` (the caller checks its connection and tries again)."""
        if own is not None and not await own.take(1, timeout=_SLOT_WAIT):
            return False
        try:
            taken = await self._slots.take(1, timeout=_SLOT_WAIT)
        except BaseException:
            if own is not None:
                own.give(1)
            raise
        if not taken:
            if own is not None:
                own.give(1)
            return False
        return True

    def _dispatch(self, fn: TaskFunction[Any, Any], msgs: list[Msg], own: _Slots | None) -> int:
        """Start processing ``msgs`` (each owns one slot from here on); returns how many."""
        for msg in msgs:
            task = asyncio.get_running_loop().create_task(self._process(fn, msg, own))
            self._inflight.add(task)
            task.add_done_callback(self._inflight.discard)
        return len(msgs)

    def _give(self, n: int, own: _Slots | None) -> None:
        self._slots.give(n)
        if own is not None:
            own.give(n)

    async def _process(self, fn: TaskFunction[Any, Any], msg: Msg, own: _Slots | None) -> None:
        try:
            await self._handle(fn, msg)
        except asyncio.CancelledError:
            await SettlePolicy.nak(msg)
            raise
        except Exception as exc:
            # The state store or stream failed us (an outage, a failover): hand the request
            # back after a pause; the consumer's max_deliver bounds how often.
            delay = fn.options.retry_delay(int(msg.metadata.num_delivered or 1))
            _log.exception("tasks.process_failed", task=fn.name, error=repr(exc), delay=delay)
            await SettlePolicy.nak(msg, delay)
        finally:
            self._give(1, own)

    async def _on_cancel(self, msg: Msg) -> None:
        assert self._backend is not None
        prefix = cancel_subject(self._backend.app, "")
        entry = self._running.get(msg.subject[len(prefix) :])
        if entry is not None:
            entry.request_cancel()

    # -- one request -----------------------------------------------------------------------

    async def _handle(self, fn: TaskFunction[Any, Any], msg: Msg) -> None:
        assert self._backend is not None
        meta = msg.metadata
        try:
            task_id = _request_task_id(msg)
        except JsflowError as exc:  # an id no key or subject may carry: never retried
            await _terminate(msg, fn.name, "illegal id", error=str(exc))
            return
        carried = _carried_state(msg, task_id)
        if carried is not None and carried[0].name != fn.name:
            await _terminate(msg, fn.name, "carries another task's state", task_id=task_id)
            return
        entry = self._running[task_id] = _Running()
        try:
            started = None
            if carried is not None and meta.num_delivered == 1:
                started = await self._start_carried(*carried, entry)
            if started is None:
                started = await self._start_read(fn, msg, task_id, carried)
                if started is None:
                    return
            # Announce the start without waiting: its ack is awaited with the outcome's.
            entry.pending.append(
                await start_event(
                    self._backend.client, self._event(started, "started"), app=self._backend.app
                )
            )
            with tracer().start_as_current_span("jsflow.tasks.execute") as span:
                span.set_attribute("jsflow.task", fn.name)
                span.set_attribute("jsflow.task_id", task_id)
                span.set_attribute("jsflow.attempt", started.attempt)
                await self._execute(fn, started, msg, entry)
        finally:
            if self._running.get(task_id) is entry:
                del self._running[task_id]
            if entry.listener is not None:
                entry.listener.close()

    async def _start_carried(
        self, state: task_pb2.TaskState, revision: int, entry: _Running
    ) -> task_pb2.TaskState | None:
        """Start a first delivery from the state its request carries: one compare-and-set
        on the revision it was created at, no read. ``None`` when anything changed since."""
        assert self._backend is not None
        if status_of(state) is not TaskStatus.PENDING or state.cancel_requested:
            return None
        lifecycle.start(state, worker=self.id)
        written = await self._backend.store.compare_and_set(state, revision)
        if not written:
            return None
        entry.written = (state, written)
        return state

    async def _start_read(
        self,
        fn: TaskFunction[Any, Any],
        msg: Msg,
        task_id: str,
        carried: tuple[task_pb2.TaskState, int] | None,
    ) -> task_pb2.TaskState | None:
        """Start from the stored state (redeliveries, retries, requests of other producers);
        ``None`` when this delivery ends here (already finished, cancelled, dead, lost race)."""
        assert self._backend is not None
        backend = self._backend
        store = backend.store
        headers = msg.headers or {}
        meta = msg.metadata
        state = await store.get(task_id)
        if state is not None and state.name != fn.name:
            # The id of another task's state (a forged or misrouted request): running this
            # function on it would finish that task with this one's outcome. Leave it alone.
            await _terminate(
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
            await self._finish_cancelled(state, msg, attempt=None)
            return None
        if meta.num_delivered == 1 and status is not TaskStatus.PENDING:
            # A second request for a task another request already started (a resubmit
            # after the duplicate window, a republished dependency release): that request
            # owns the task until acked and is redelivered if its worker dies, so this
            # copy must not start a concurrent attempt. Only a redelivery may take over.
            _log.info("tasks.duplicate_request", task=fn.name, task_id=task_id, status=status.value)
            await SettlePolicy.ack(msg)
            return None
        if meta.num_delivered > fn.options.retries + 1 + _CRASH_ALLOWANCE:
            await self._finish(
                state.id,
                msg,
                TaskStatus.DEAD,
                None,
                "DeliveryLimit",
                error_message=f"delivered {meta.num_delivered} times without finishing",
            )
            return None
        read_attempt = state.attempt

        def start(s: task_pb2.TaskState) -> None:
            lifecycle.start(s, worker=self.id, attempt=read_attempt)

        started = await store.transition(task_id, start)
        if started is None:  # another worker or a canceller moved first
            current = await store.get(task_id)
            if current is not None and status_of(current).terminal:
                await SettlePolicy.ack(msg)
        return started

    async def _execute(
        self, fn: TaskFunction[Any, Any], state: task_pb2.TaskState, msg: Msg, entry: _Running
    ) -> None:
        assert self._backend is not None
        backend = self._backend
        attempt = state.attempt
        try:
            data = await backend.payloads.fetch(bytes(state.args), state.args_ref)
            if state.args_ref:
                entry.args = data
            args, kwargs = fn.codec.decode_args(data)
        except (CodecError, ConfigError, InvalidKeyError, ControlLineTooLongError) as exc:
            # Arguments that cannot be read (bad encoding, an illegal artifact reference)
            # never will be: the task is dead, not retried.
            await self._finish(
                state.id, msg, TaskStatus.DEAD, attempt, type(exc).__name__, error_message=str(exc)
            )
            return
        heartbeat = asyncio.get_running_loop().create_task(self._heartbeat(msg, entry, state.id))
        ctx = TaskContext(backend.client, state.id, state.name, attempt, app=backend.app)
        try:
            limiter = self._limiters.get(fn.name)
            if limiter is not None:
                await limiter.acquire("starts")
            inner = asyncio.get_running_loop().create_task(self._invoke(fn, args, kwargs, ctx))
            entry.task = inner
            if entry.cancel_requested:
                inner.cancel()
            result = await inner
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if entry.cancel_requested and (current is None or not current.cancelling()):
                await self._finish_cancelled(state, msg, attempt=attempt)
                return
            raise
        except Exception as exc:
            await self._failed(fn, state, msg, exc)
            return
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat
        try:
            payload = fn.codec.encode_result(result)
            data, ref = await backend.payloads.put(
                f"{state.id}.result", payload, ttl=backend.payloads.artifact_ttl
            )
        except JsflowError as exc:
            await self._finish(
                state.id,
                msg,
                TaskStatus.FAILED,
                attempt,
                type(exc).__name__,
                error_message=str(exc),
            )
            return
        await self._finish(state.id, msg, TaskStatus.SUCCEEDED, attempt, result=(data, ref))

    async def _invoke(
        self,
        fn: TaskFunction[Any, Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        ctx: TaskContext,
    ) -> Any:
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

    async def _heartbeat(self, msg: Msg, entry: _Running, task_id: str) -> None:
        """Tell the server the attempt is alive every ``ack_wait / 3`` seconds; once it has
        run ``_LISTEN_AFTER`` seconds, also cancel it when its state's ``cancel_requested``
        flag shows up on the store's shared watch (a lost core cancel signal)."""
        interval = self.ack_wait / 3
        this = asyncio.current_task()
        due = time.monotonic() + interval
        listen_at = time.monotonic() + min(_LISTEN_AFTER, interval)
        listener = None
        while True:
            now = time.monotonic()
            if listener is None and now >= listen_at:
                listener = await self._listen(entry, task_id)
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
                        entry.request_cancel()
                    continue
                if time.monotonic() < due:
                    continue
            due = time.monotonic() + interval
            with contextlib.suppress(Exception):
                await msg.in_progress()

    async def _listen(
        self, entry: _Running, task_id: str
    ) -> KeyListener[task_pb2.TaskState] | None:
        """Register the attempt's listener on the shared watch, then read the state once
        (a flag written before the listener existed); ``None`` when that failed."""
        assert self._backend is not None
        store = self._backend.store
        try:
            entry.listener = await store.listen(task_id)
            state = await store.get(task_id)
        except JsflowError as exc:  # store closing, connection trouble: retried later
            _log.warning("tasks.cancel_listen_failed", task_id=task_id, error=repr(exc))
            return entry.listener
        if state is not None and state.cancel_requested:
            entry.request_cancel()
        return entry.listener

    # -- outcomes --------------------------------------------------------------------------

    async def _failed(
        self, fn: TaskFunction[Any, Any], state: task_pb2.TaskState, msg: Msg, exc: Exception
    ) -> None:
        attempt = state.attempt
        error_type, error_message = error_texts(exc)
        if attempt > fn.options.retries:
            await self._finish(
                state.id, msg, TaskStatus.FAILED, attempt, error_type, error_message=error_message
            )
            return
        assert self._backend is not None
        entry = self._running.get(state.id)
        cancelled = entry is not None and entry.cancel_requested

        def retry(s: task_pb2.TaskState) -> None:
            lifecycle.retry(s, attempt=attempt, error_type=error_type, error_message=error_message)

        new = None
        if not cancelled:
            try:
                new = await self._backend.store.transition(state.id, retry)
            except lifecycle.CancelRequested:  # a cancelled task is not retried
                cancelled = True
        if cancelled:
            await self._finish_cancelled(state, msg, attempt=attempt)
            return
        if new is None:
            return
        delay = fn.options.retry_delay(attempt)
        await self._flush(state.id, self._event(new, "retrying"))
        await SettlePolicy.nak(msg, delay)
        _log.info("tasks.retrying", task=fn.name, task_id=state.id, attempt=attempt, delay=delay)

    async def _finish_cancelled(
        self, state: task_pb2.TaskState, msg: Msg, *, attempt: int | None
    ) -> None:
        await self._finish(
            state.id,
            msg,
            TaskStatus.CANCELLED,
            attempt,
            "TaskCancelledError",
            error_message="cancelled",
        )

    async def _finish(
        self,
        task_id: str,
        msg: Msg,
        status: TaskStatus,
        attempt: int | None,
        error_type: str = "",
        *,
        error_message: str = "",
        result: tuple[bytes, str] | None = None,
    ) -> None:
        """Record a terminal outcome (CAS on the attempt, carrying the retention TTL),
        announce it, resolve dependents, settle artifacts, wait for every event's ack, then
        ack. A lost CAS means another attempt owns the task: leave the message to it."""
        assert self._backend is not None
        backend = self._backend

        def finish(s: task_pb2.TaskState) -> None:
            lifecycle.finish(
                s,
                status,
                attempt=attempt,
                error_type=error_type,
                error_message=error_message,
                result=result,
            )

        entry = self._running.get(task_id)
        new = None
        if entry is not None and entry.written is not None and attempt is not None:
            # Finish what this worker wrote, by its revision: one write, no read or queue.
            # Anything that changed it since (a cancel request) makes this miss: then the
            # general compare-and-set decides.
            base, revision = entry.written
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
        await backend.payloads.settle(new, entry.args if entry is not None else None)
        await self._flush(task_id, announce)
        if status is TaskStatus.DEAD:
            await SettlePolicy.term(msg)
        else:
            await SettlePolicy.ack(msg)

    async def _announce_terminal(self, state: task_pb2.TaskState) -> None:
        """Publish the terminal event of a finished task unless the stream has it: the
        state was written but its event was lost (a publish that failed in a failover left
        the request unacked, so it came back). Events are as durable as the state."""
        assert self._backend is not None
        backend = self._backend
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

    async def _flush(self, task_id: str, last: PendingPublish | TaskEvent) -> None:
        """Publish (or take the pending) ``last`` and wait for the acks of every event this
        attempt published: all stored before the request is acked or nak'ed."""
        assert self._backend is not None
        if isinstance(last, TaskEvent):
            last = await start_event(self._backend.client, last, app=self._backend.app)
        entry = self._running.get(task_id)
        pending = [*entry.pending, last] if entry is not None else [last]
        if entry is not None:
            entry.pending = []
        await wait_all(pending)


def _request_task_id(msg: Msg) -> str:
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


async def _terminate(msg: Msg, task: str, reason: str, **detail: str) -> None:
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


def _carried_state(msg: Msg, task_id: str) -> tuple[task_pb2.TaskState, int] | None:
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
