"""``App`` and ``@app.task``: async functions that run on workers as durable tasks."""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import inspect
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar

from jsflow._validate import (
    MAX_DURATION,
    check_id,
    count,
    duration,
    number,
    one_of,
    optional_duration,
    shorten,
)
from jsflow.errors import ConfigError
from jsflow.observability import get_logger, tracer
from jsflow.tasks.backend import (
    DEFAULT_ARTIFACT_THRESHOLD,
    DEFAULT_RETENTION,
    TaskBackend,
    check_retention,
    new_state,
)
from jsflow.tasks.handle import TaskHandle
from jsflow.tasks.payload import CallCodec
from jsflow.tasks.streams import DEFAULT_APP, app_scope, check_max_age, validate_name

if TYPE_CHECKING:
    from jsflow.client import Client
    from jsflow.tasks.schedules import Schedule
    from jsflow.tasks.worker import Worker

__all__ = ["App", "TaskFunction", "TaskOptions"]

P = ParamSpec("P")
R = TypeVar("R")
_log = get_logger(__name__)


_MAX_RETRIES = 1000  # the request's server-side max_deliver is derived from it
_MAX_CONCURRENCY = 100_000


def _parse_rate(rate_limit: object) -> tuple[float, float] | None:
    """``"10/s"``, ``"100/m"``, ``"5/h"`` or ``(rate, per_seconds)``."""
    if rate_limit is None:
        return None
    if isinstance(rate_limit, tuple):
        if len(rate_limit) != 2:
            raise ConfigError(f"rate_limit must be (rate, per_seconds), got {shorten(rate_limit)}")
        rate, per = rate_limit
    elif isinstance(rate_limit, str):
        units = {"s": 1.0, "m": 60.0, "h": 3600.0}
        try:
            amount, unit = rate_limit.split("/")
            rate, per = float(amount), units[unit.strip()]
        except (ValueError, KeyError) as exc:
            raise ConfigError(
                f"rate_limit must look like '10/s', got {shorten(rate_limit)}"
            ) from exc
    else:
        raise ConfigError(f"rate_limit must be a str or a tuple, got {shorten(rate_limit)}")
    rate = number("rate_limit (rate)", rate, minimum=0.0, exclusive_minimum=True)
    per = duration("rate_limit (per)", per)
    return rate, per


@dataclass(frozen=True, slots=True)
class TaskOptions:
    """How a task runs: retries with exponential backoff, a timeout per attempt, limits.

    Attempt ``n`` (after a failure) is retried after ``min(max_backoff, backoff * 2**(n-1))``
    seconds. ``concurrency`` caps attempts of this task at once per worker; ``rate_limit``
    (``(rate, per)``) caps starts across all workers.
    """

    name: str
    retries: int = 3
    timeout: float | None = None
    rate_limit: tuple[float, float] | None = None
    concurrency: int | None = None
    backoff: float = 1.0
    max_backoff: float = 60.0

    def __post_init__(self) -> None:
        validate_name(self.name)
        count("retries", self.retries, minimum=0, maximum=_MAX_RETRIES)
        optional_duration("timeout", self.timeout)
        if self.concurrency is not None:
            count("concurrency", self.concurrency, minimum=1, maximum=_MAX_CONCURRENCY)
        backoff = duration("backoff", self.backoff, positive=False)
        max_backoff = duration("max_backoff", self.max_backoff, positive=False)
        if max_backoff < backoff:
            raise ConfigError(f"max_backoff ({max_backoff}) must be >= backoff ({backoff})")

    def retry_delay(self, attempt: int) -> float:
        """Seconds to wait before retrying after failed attempt ``attempt`` (1-based)."""
        return float(min(self.max_backoff, self.backoff * 2 ** max(0, attempt - 1)))


class TaskFunction(Generic[P, R]):
    """An async function registered as a task. Call it to run it here; ``submit`` to queue."""

    def __init__(self, app: App, fn: Callable[P, Awaitable[R]], options: TaskOptions) -> None:
        self.app = app
        self.fn = fn
        self.options = options
        self.name = options.name
        self.codec = CallCodec(fn)
        functools.update_wrapper(self, fn)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Awaitable[R]:
        """Run the function directly, in this process (no task is created)."""
        return self.fn(*args, **kwargs)

    def handle(self, task_id: str) -> TaskHandle[R]:
        """A handle on an existing task of this function, by id."""
        return TaskHandle(self.app._require_backend(), task_id, self.name, self.codec)

    async def submit(
        self, *args: Any, depends_on: Iterable[TaskHandle[Any] | str] | None = None, **kwargs: Any
    ) -> TaskHandle[R]:
        """Queue a call; returns its :class:`TaskHandle` once the request is durable.

        The request waits for a worker at most the app's ``request_max_age`` (7 days by
        default): the server deletes older requests, and such a task never runs (it stays
        ``PENDING``).

        With ``depends_on``, the task starts only after every dependency succeeded and is
        cancelled (naming the cause) when one did not.
        """
        return await self.submit_with(args, kwargs, depends_on=depends_on)

    async def submit_with(
        self,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
        *,
        task_id: str | None = None,
        depends_on: Iterable[TaskHandle[Any] | str] | None = None,
    ) -> TaskHandle[R]:
        """:meth:`submit` with an explicit ``task_id`` (idempotent: resubmitting is a no-op)."""
        kwargs = kwargs or {}
        task_id = check_id("task id", task_id) if task_id is not None else uuid.uuid4().hex
        deps = [
            check_id("dependency id", d.id if isinstance(d, TaskHandle) else str(d))
            for d in depends_on or ()
        ]
        payload = self.codec.encode_args(args, kwargs)
        backend = await self.app.backend()
        with tracer().start_as_current_span("jsflow.tasks.submit") as span:
            span.set_attribute("jsflow.task", self.name)
            span.set_attribute("jsflow.task_id", task_id)
            data, ref = await backend.externalize(f"{task_id}.args", payload)
            state = new_state(task_id, self.name, data, ref)
            if deps:
                deps = await backend.check_dependencies(task_id, deps)
                await backend.submit_dependent(state, deps)
            else:
                await backend.request([state])
        return TaskHandle(backend, task_id, self.name, self.codec)

    async def submit_at(self, when: dt.datetime, *args: Any, **kwargs: Any) -> TaskHandle[R]:
        """Queue a call that the server releases at ``when`` (timezone-aware datetime, at
        most a century from now)."""
        from jsflow.tasks.schedules import submit_at

        _check_when(when)
        return await submit_at(self, when, args, kwargs)

    async def submit_in(self, delay: float, *args: Any, **kwargs: Any) -> TaskHandle[R]:
        """Queue a call that the server releases after ``delay`` seconds (at most a century)."""
        delay = duration("delay", delay, positive=False)
        when = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=delay)
        return await self.submit_at(when, *args, **kwargs)

    async def schedule(self, schedule_id: str, cron: str, *args: Any, **kwargs: Any) -> Schedule:
        """Run this task on ``cron`` (6-field cron with seconds, ``@every 10s``, ``@hourly``).

        The server fires each tick once, however many workers run; each firing is a task
        whose id is derived from the schedule and the tick.
        """
        from jsflow.tasks.schedules import schedule_cron

        return await schedule_cron(self, schedule_id, cron, args, kwargs)


def _check_when(when: object) -> None:
    """``when`` of :meth:`TaskFunction.submit_at`: an aware datetime within a century."""
    one_of("when", when, dt.datetime)
    assert isinstance(when, dt.datetime)
    if when.tzinfo is None or when.utcoffset() is None:
        raise ConfigError(f"when must be a timezone-aware datetime, got {when!r}")
    try:
        ahead = (when - dt.datetime.now(dt.UTC)).total_seconds()
    except OverflowError as exc:
        raise ConfigError(f"when is out of range: {when!r}") from exc
    number("when (seconds from now)", ahead, maximum=MAX_DURATION)


class App:
    """A named set of tasks on one client; workers of any process execute them.

    ``client`` may be ``None`` for an app defined at import time and bound later
    (``app.bind(client)``, as the ``jsflow worker`` command does). ``retention`` (seconds or a
    ``timedelta``, at least 1 s; default 24 h; ``None`` keeps them forever) is how long a
    finished task's state and artifacts stay: the server expires them (per-key TTL set by
    the write that finishes the task), so the task bucket does not grow without bound.

    ``request_max_age`` (seconds or a ``timedelta``, at least 1 s) is how long the
    ``JSFLOW_TASKS`` stream keeps task requests and events (a per-message TTL; schedules
    are not affected: a recurring one lives until cancelled, an ``@at`` one until it fired);
    the default, ``None``, uses the value the stream records (7 days for a new stream),
    while a value is recorded on the stream (created or existing; the first app opened on a
    client decides) and applies to what is published from then on.
    The server deletes a request older than that: a task whose request no worker consumed
    in time (no worker running for that long, or a backlog that old) never runs; its state
    stays ``PENDING`` and ``result()`` waits until its timeout. A task already running when
    its request expires still finishes, and is redelivered only while its request exists.
    Finished tasks' events expire the same way (``events()`` then starts later).

    An app's name separates it from every other app: its durables
    (``jsflow_task_<app>~<name>``), subjects (``task.<kind>.<app>~<name>.<id>`` for
    requests, events and schedules), task states (bucket ``jsflow_tasks_<app>``, so ids never
    clash), cancel signals and artifact names carry the app name (at most 64 characters), so
    two apps defining the same task never run each other's requests. The app named
    ``"default"`` keeps the unqualified names (``task.requested.<name>``, bucket
    ``jsflow_tasks``), which producers outside jsflow publish on; ``isolated=False`` makes an
    app of another name share them too (the names of jsflow before apps were separated).
    An :class:`~jsflow.tasks.router.EventRouter` requests an app's tasks with ``app=``.
    """

    def __init__(
        self,
        client: Client | None,
        name: str = "default",
        *,
        artifact_threshold: int = DEFAULT_ARTIFACT_THRESHOLD,
        retention: float | dt.timedelta | None = DEFAULT_RETENTION,
        request_max_age: float | dt.timedelta | None = None,
        isolated: bool | None = None,
    ) -> None:
        # The namespace of this app's subjects, durables and state.
        self.scope = app_scope(name, isolated)
        count("artifact_threshold", artifact_threshold, minimum=1)
        self.client = client
        self.name = name
        self.isolated = self.scope != DEFAULT_APP
        self.artifact_threshold = artifact_threshold
        self.retention = check_retention(retention)
        if isinstance(request_max_age, dt.timedelta):
            request_max_age = request_max_age.total_seconds()
        self.request_max_age = check_max_age(request_max_age)
        self.tasks: dict[str, TaskFunction[Any, Any]] = {}
        self._backend: TaskBackend | None = None
        self._backend_lock = asyncio.Lock()

    def bind(self, client: Client) -> None:
        """Attach the client of an app created with ``client=None``."""
        if self.client is not None and self.client is not client:
            raise ConfigError(f"app {self.name!r} is already bound to a client")
        self.client = client

    def task(
        self,
        fn: Callable[P, Awaitable[R]] | None = None,
        *,
        name: str | None = None,
        retries: int = 3,
        timeout: float | None = None,
        rate_limit: str | tuple[float, float] | None = None,
        concurrency: int | None = None,
        backoff: float = 1.0,
        max_backoff: float = 60.0,
    ) -> Any:
        """Decorator registering an async function as a task (``@app.task`` or
        ``@app.task(retries=5, timeout=30)``); returns a :class:`TaskFunction`."""

        def register(func: Callable[P, Awaitable[R]]) -> TaskFunction[P, R]:
            if not inspect.iscoroutinefunction(func):
                raise ConfigError(f"@task needs an async function, got {func!r}")
            options = TaskOptions(
                name=name or func.__name__,
                retries=retries,
                timeout=timeout,
                rate_limit=_parse_rate(rate_limit),
                concurrency=concurrency,
                backoff=backoff,
                max_backoff=max_backoff,
            )
            if options.name in self.tasks:
                raise ConfigError(f"task {options.name!r} is already registered in {self.name!r}")
            task_fn: TaskFunction[P, R] = TaskFunction(self, func, options)
            self.tasks[options.name] = task_fn
            return task_fn

        return register(fn) if fn is not None else register

    def _require_backend(self) -> TaskBackend:
        if self._backend is None:
            raise ConfigError("the app is not opened yet: await app.backend() first")
        return self._backend

    async def backend(self) -> TaskBackend:
        """The shared :class:`TaskBackend` (streams and task store created on first use)."""
        if self._backend is not None:
            return self._backend
        if self.client is None:
            raise ConfigError(f"app {self.name!r} has no client: call app.bind(client)")
        async with self._backend_lock:
            if self._backend is None:
                self._backend = await TaskBackend.open(
                    self.client,
                    artifact_threshold=self.artifact_threshold,
                    retention=self.retention,
                    request_max_age=self.request_max_age,
                    app=self.scope,
                )
        return self._backend

    async def handle(self, task_id: str) -> TaskHandle[Any]:
        """A handle on any task by id (results decode with the task's codec when known)."""
        backend = await self.backend()
        state = await backend.store.get(task_id)
        name = state.name if state is not None else ""
        fn = self.tasks.get(name)
        return TaskHandle(backend, task_id, name, fn.codec if fn else None)

    def worker(
        self,
        concurrency: int = 10,
        *,
        ack_wait: float = 30.0,
        tasks: Iterable[str] | None = None,
    ) -> Worker:
        """A :class:`Worker` for this app's tasks; use ``async with`` or ``await run()``."""
        from jsflow.tasks.worker import Worker

        return Worker(self, concurrency=concurrency, ack_wait=ack_wait, tasks=tasks)

    async def run_worker(self, concurrency: int = 10, *, ack_wait: float = 30.0) -> None:
        """Execute this app's tasks until cancelled (see :class:`Worker`)."""
        await self.worker(concurrency, ack_wait=ack_wait).run()
