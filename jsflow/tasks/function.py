"""``TaskFunction`` and ``TaskOptions``: an async function registered as a task, and how
it runs. Registered by :meth:`jsflow.tasks.app.App.task`; below the app and its workers,
which see an app only as a :class:`TaskRegistry` (and its eager mode only as an
:class:`EagerRunner`)."""

from __future__ import annotations

import datetime as dt
import functools
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, ParamSpec, Protocol, TypeVar

from jsflow._validate import (
    MAX_DURATION,
    check_id,
    count,
    duration,
    number,
    one_of,
    optional_duration,
)
from jsflow.backoff import Backoff
from jsflow.coordination import rates
from jsflow.errors import ConfigError
from jsflow.observability import optional_span
from jsflow.tasks.backend import TaskBackend
from jsflow.tasks.calls import CallCodec
from jsflow.tasks.handle import TaskHandle
from jsflow.tasks.lifecycle import new_state
from jsflow.tasks.schedules import Schedule, schedule_cron, submit_at
from jsflow.tasks.streams import validate_name

__all__ = ["EagerRunner", "TaskFunction", "TaskOptions", "TaskRegistry", "parse_rate"]

P = ParamSpec("P")
R = TypeVar("R")


class EagerRunner(Protocol):
    """What a task function needs of an app's eager mode (:mod:`jsflow.tasks.eager`): run
    the requests it just submitted here and now, through a worker's attempt."""

    async def check_dependencies(self, backend: TaskBackend, task: str, deps: list[str]) -> None:
        """Refuse (before the task is created) dependencies that have not finished."""
        ...

    async def run(self, fn: TaskFunction[Any, Any], task_ids: Sequence[str]) -> None:
        """Execute the submitted tasks ``task_ids`` of ``fn`` inline, one after another."""
        ...


class TaskRegistry(Protocol):
    """What a task function and a worker need of their app (:class:`jsflow.tasks.app.App`)."""

    @property
    def name(self) -> str:
        """The app's name."""
        ...

    @property
    def tasks(self) -> Mapping[str, TaskFunction[Any, Any]]:
        """The app's task functions by task name."""
        ...

    async def backend(self) -> TaskBackend:
        """The app's backend (opened on first use)."""
        ...

    def opened_backend(self) -> TaskBackend:
        """The app's backend, :class:`ConfigError` when it is not opened yet."""
        ...

    @property
    def eager_runner(self) -> EagerRunner | None:
        """The runner of the app's eager mode while it is on (``None``: submits queue)."""
        ...


_MAX_RETRIES = 1000  # the request's server-side max_deliver is derived from it
_MAX_CONCURRENCY = 100_000


def parse_rate(rate_limit: object) -> tuple[float, float] | None:
    """``None``, or ``(rate, per)`` from ``"10/s"``, ``"100 per minute"``, ``(rate, per)``
    (see :func:`jsflow.coordination.rates.parse_rate`)."""
    if rate_limit is None:
        return None
    return rates.parse_rate(rate_limit, what="rate_limit")


@dataclass(frozen=True, slots=True)
class TaskOptions:
    """How a task runs: retries with exponential backoff, a timeout per attempt, limits.

    Attempt ``n`` (after a failure) is retried after ``min(max_backoff, backoff * 2**(n-1))``
    seconds, reduced by up to ``jitter`` of it (0-1; 0: exact delays). Only exceptions that
    are instances of ``retry_on`` and of none of ``dont_retry_on`` are retried; any other
    fails the task at once. ``concurrency`` caps attempts of this task at once per worker;
    ``rate_limit`` (``(rate, per)``) caps starts across all workers.
    """

    name: str
    retries: int = 3
    timeout: float | None = None
    rate_limit: tuple[float, float] | None = None
    concurrency: int | None = None
    backoff: float = 1.0
    max_backoff: float = 60.0
    jitter: float = 0.0
    retry_on: tuple[type[BaseException], ...] = (Exception,)
    dont_retry_on: tuple[type[BaseException], ...] = ()

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
        number("jitter", self.jitter, minimum=0.0, maximum=1.0)
        for what, types in (("retry_on", self.retry_on), ("dont_retry_on", self.dont_retry_on)):
            if not isinstance(types, tuple) or not all(
                isinstance(t, type) and issubclass(t, BaseException) for t in types
            ):
                raise ConfigError(f"{what} must be a tuple of exception types, got {types!r}")

    def retryable(self, error: BaseException) -> bool:
        """Whether a failure with ``error`` may be retried (``retry_on``/``dont_retry_on``)."""
        return isinstance(error, self.retry_on) and not isinstance(error, self.dont_retry_on)

    @property
    def retry_backoff(self) -> Backoff:
        """The :class:`~jsflow.backoff.Backoff` between attempts."""
        return Backoff(initial=self.backoff, maximum=self.max_backoff, jitter=self.jitter)

    def retry_delay(self, attempt: int) -> float:
        """Seconds to wait before retrying after failed attempt ``attempt`` (1-based)."""
        return self.retry_backoff.delay(attempt)


class TaskFunction(Generic[P, R]):
    """An async function registered as a task. Call it to run it here; ``submit`` to queue."""

    def __init__(
        self, app: TaskRegistry, fn: Callable[P, Awaitable[R]], options: TaskOptions
    ) -> None:
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
        return TaskHandle(self.app.opened_backend(), task_id, self.name, self.codec)

    async def submit(
        self, *args: Any, depends_on: Iterable[TaskHandle[Any] | str] | None = None, **kwargs: Any
    ) -> TaskHandle[R]:
        """Queue a call; returns its :class:`TaskHandle` once the request is durable.

        The request waits for a worker at most the app's ``request_max_age`` (7 days by
        default): the server deletes older requests, and such a task never runs (it stays
        ``PENDING``).

        With ``depends_on``, the task starts only after every dependency succeeded and is
        cancelled (naming the cause) when one did not.

        In the app's eager mode (:meth:`jsflow.tasks.app.App.eager`) the task has run here,
        to its outcome, when this returns (see :mod:`jsflow.tasks.eager`).
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
        eager = self.app.eager_runner
        attributes = {"jsflow.task": self.name, "jsflow.task_id": task_id}
        with optional_span("jsflow.tasks.submit", attributes):
            if deps:
                deps = await backend.dag.check(task_id, deps)
                if eager is not None:
                    await eager.check_dependencies(backend, self.name, deps)
            data, ref = await backend.payloads.put(f"{task_id}.args", payload)
            state = new_state(task_id, self.name, data, ref)
            if deps:
                await backend.dag.register(state, deps)
            else:
                await backend.requests.submit([state])
        if eager is not None:
            await eager.run(self, [task_id])
        return TaskHandle(backend, task_id, self.name, self.codec)

    async def submit_many(
        self, calls: Iterable[tuple[Any, ...] | tuple[tuple[Any, ...], dict[str, Any]]]
    ) -> list[TaskHandle[R]]:
        """Queue many calls at once, one handle each: a group. ``calls`` holds argument
        tuples (``(1, 2)``) or ``(args, kwargs)`` pairs. Every call is checked and encoded
        before any I/O; the requests go to the server as one atomic batch (all or none).
        A chord is a group plus a task that depends on it: ``await total.submit(
        depends_on=handles)``, which reads their results with
        ``current_task().dependency_results()``. In eager mode each call runs here, in
        order, once the whole batch is submitted."""
        encoded = []
        for call in calls:
            if len(call) == 2 and isinstance(call[0], tuple) and isinstance(call[1], dict):
                args, kwargs = call
            else:
                args, kwargs = tuple(call), {}
            encoded.append(self.codec.encode_args(args, kwargs))
        backend = await self.app.backend()
        states = []
        attributes = {"jsflow.task": self.name, "jsflow.tasks": len(encoded)}
        with optional_span("jsflow.tasks.submit_many", attributes):
            for payload in encoded:
                task_id = uuid.uuid4().hex
                data, ref = await backend.payloads.put(f"{task_id}.args", payload)
                states.append(new_state(task_id, self.name, data, ref))
            if states:
                await backend.requests.submit(states)
        eager = self.app.eager_runner
        if eager is not None and states:
            await eager.run(self, [s.id for s in states])
        return [TaskHandle(backend, s.id, self.name, self.codec) for s in states]

    async def submit_at(self, when: dt.datetime, *args: Any, **kwargs: Any) -> TaskHandle[R]:
        """Queue a call that the server releases at ``when`` (timezone-aware datetime, at
        most a century from now)."""
        _check_when(when)
        payload = self.codec.encode_args(args, kwargs)
        backend, task_id = await submit_at(self.app.backend, self.name, when, payload)
        return TaskHandle(backend, task_id, self.name, self.codec)

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
        payload = self.codec.encode_args(args, kwargs)
        return await schedule_cron(self.app.backend, self.name, schedule_id, cron, payload)


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
