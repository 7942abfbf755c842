"""``App`` and ``@app.task``: async functions that run on workers as durable tasks."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import inspect
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from jsflow._validate import (
    count,
)
from jsflow.connection import check_replicas
from jsflow.errors import ConfigError
from jsflow.observability import get_logger
from jsflow.tasks.backend import (
    DEFAULT_ARTIFACT_THRESHOLD,
    DEFAULT_RETENTION,
    TaskBackend,
    check_retention,
)
from jsflow.tasks.eager import EagerMode
from jsflow.tasks.function import EagerRunner, TaskFunction, TaskOptions, parse_rate
from jsflow.tasks.handle import TaskHandle
from jsflow.tasks.streams import DEFAULT_APP, app_scope, check_max_age
from jsflow.tasks.worker import Worker

if TYPE_CHECKING:
    from jsflow.client import Client

__all__ = ["App", "TaskFunction", "TaskOptions"]

P = ParamSpec("P")
R = TypeVar("R")
_log = get_logger(__name__)


def _in_thread(func: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
    """An async function running ``func`` (sync) in a worker thread, with its signature."""

    @functools.wraps(func)
    async def run(*args: Any, **kwargs: Any) -> Any:
        return await asyncio.to_thread(func, *args, **kwargs)

    return run


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

    ``replicas`` (1-5; default the client's, see :func:`jsflow.connect`) is the replica
    count of the task stream, state bucket and artifact bucket when they are created.
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
        replicas: int | None = None,
    ) -> None:
        # The namespace of this app's subjects, durables and state.
        self.scope = self._own_scope = app_scope(name, isolated)
        count("artifact_threshold", artifact_threshold, minimum=1)
        self.client = client
        self.name = name
        self.isolated = self.scope != DEFAULT_APP
        self.replicas = None if replicas is None else check_replicas(replicas)
        self.artifact_threshold = artifact_threshold
        self.retention = check_retention(retention)
        if isinstance(request_max_age, dt.timedelta):
            request_max_age = request_max_age.total_seconds()
        self.request_max_age = check_max_age(request_max_age)
        self.tasks: dict[str, TaskFunction[Any, Any]] = {}
        self._backend: TaskBackend | None = None
        self._backend_lock = asyncio.Lock()
        self._eager: EagerMode | None = None

    def bind(self, client: Client, *, scope: str | None = None) -> None:
        """Attach the client of an app created with ``client=None`` (or whose client is
        closed: a test binds a module-level app to each test's client). ``scope`` runs the
        app in another namespace than its name's (tests isolate apps this way; see
        :func:`jsflow.testing.bound`)."""
        if self.client is not None and self.client is not client and not self.client.is_closed:
            raise ConfigError(f"app {self.name!r} is already bound to an open client")
        if scope is not None:
            self.scope = app_scope(scope)
            self.isolated = self.scope != DEFAULT_APP
        if self.client is not client:
            self._backend = None  # opened on the old client: open again on this one
        self.client = client

    def unbind(self) -> None:
        """Detach the client (and forget the backend opened on it); the app keeps its tasks."""
        self.client = None
        self._backend = None
        self.scope = self._own_scope
        self.isolated = self.scope != DEFAULT_APP

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
        jitter: float = 0.0,
        retry_on: tuple[type[BaseException], ...] = (Exception,),
        dont_retry_on: tuple[type[BaseException], ...] = (),
    ) -> Any:
        """Decorator registering a function as a task (``@app.task`` or
        ``@app.task(retries=5, timeout=30)``); returns a :class:`TaskFunction`.

        A plain (sync) function runs in a worker thread (``asyncio.to_thread``): a timeout
        or cancel ends the attempt at once, but Python cannot stop the thread, which runs
        on until the function returns (its result is then dropped). See
        :class:`TaskOptions` for the retry options."""

        def register(func: Callable[P, Awaitable[R]]) -> TaskFunction[P, R]:
            if not callable(func):
                raise ConfigError(f"@task needs a function, got {func!r}")
            if not inspect.iscoroutinefunction(func):
                func = _in_thread(func)
            options = TaskOptions(
                name=name or func.__name__,
                retries=retries,
                timeout=timeout,
                rate_limit=parse_rate(rate_limit),
                concurrency=concurrency,
                backoff=backoff,
                max_backoff=max_backoff,
                jitter=jitter,
                retry_on=retry_on,
                dont_retry_on=dont_retry_on,
            )
            if options.name in self.tasks:
                raise ConfigError(f"task {options.name!r} is already registered in {self.name!r}")
            task_fn: TaskFunction[P, R] = TaskFunction(self, func, options)
            self.tasks[options.name] = task_fn
            return task_fn

        return register(fn) if fn is not None else register

    @contextlib.contextmanager
    def eager(self) -> Iterator[App]:
        """Eager mode for the block (for unit tests of task code): every ``submit`` and
        ``submit_many`` of this app's tasks, from any coroutine, runs the task here, to its
        outcome, before it returns; its handle's ``result()`` is then already there.

        The state, events, retries, timeout, progress, dependency results and outcome are
        recorded through the server by the attempt code a worker runs, so a test sees what a
        worker would give (:class:`TaskFailedError` included). What differs (retry delays
        skipped; no ``concurrency`` or ``rate_limit``; ``depends_on`` needs finished
        dependencies; timed submits and schedules still need a worker): see
        :mod:`jsflow.tasks.eager`. A block, not an app setting, so production code never
        runs eagerly by accident. Blocks nest; leaving one restores the mode before it.
        """
        previous, self._eager = self._eager, EagerMode(self)
        try:
            yield self
        finally:
            self._eager = previous

    @property
    def eager_runner(self) -> EagerRunner | None:
        """The runner of :meth:`eager` while a block is open (``None``: submits queue)."""
        return self._eager

    def opened_backend(self) -> TaskBackend:
        """The backend once :meth:`backend` opened it (:class:`ConfigError` before)."""
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
                    replicas=self.replicas,
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
        return Worker(self, concurrency=concurrency, ack_wait=ack_wait, tasks=tasks)

    async def run_worker(self, concurrency: int = 10, *, ack_wait: float = 30.0) -> None:
        """Execute this app's tasks until cancelled (see :class:`Worker`)."""
        await self.worker(concurrency, ack_wait=ack_wait).run()
