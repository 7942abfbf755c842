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
import uuid
from collections.abc import Iterable
from types import TracebackType
from typing import TYPE_CHECKING, Any

from jsflow._js import Msg, Puller, api, js_errors, map_nats_errors
from jsflow._validate import count, number
from jsflow.errors import (
    ConfigError,
    ConnectionClosedError,
    JsflowError,
    ServerError,
)
from jsflow.flow.consume import SettlePolicy, fetch_loop
from jsflow.observability import get_logger
from jsflow.tasks.attempt import (
    CRASH_ALLOWANCE,
    Attempt,
    carried_state,
    request_task_id,
    terminate,
)
from jsflow.tasks.backend import TaskBackend
from jsflow.tasks.lifecycle import (
    MAX_ERROR_MESSAGE,
    MAX_ERROR_TYPE,
    error_texts,
)
from jsflow.tasks.streams import (
    DEFAULT_APP,
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
# The server stops delivering a request after this many deliveries beyond the point where
# the worker records it DEAD itself: a backstop for requests no attempt can settle.
_SERVER_MARGIN = 2
_MAX_CONCURRENCY = 100_000
_MAX_ACK_WAIT = 24 * 3600.0  # a heartbeat every ack_wait/3 keeps any attempt alive anyway
_SLOT_WAIT = 1.0  # how often a loop waiting for a free slot checks its connection


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
        self._running: dict[str, Attempt] = {}
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
            max_deliver=fn.options.retries + 1 + CRASH_ALLOWANCE + _SERVER_MARGIN,
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
        try:
            task_id = request_task_id(msg)
        except JsflowError as exc:  # an id no key or subject may carry: never retried
            await terminate(msg, fn.name, "illegal id", error=str(exc))
            return
        carried = carried_state(msg, task_id)
        if carried is not None and carried[0].name != fn.name:
            await terminate(msg, fn.name, "carries another task's state", task_id=task_id)
            return
        attempt = self._running[task_id] = Attempt(
            self._backend,
            fn,
            msg,
            task_id,
            worker_id=self.id,
            ack_wait=self.ack_wait,
            limiter=self._limiters.get(fn.name),
        )
        try:
            await attempt.run(carried)
        finally:
            if self._running.get(task_id) is attempt:
                del self._running[task_id]
