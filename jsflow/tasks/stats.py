"""KPIs of an app's tasks from the server's own data, not from one process's memory.

:func:`task_stats` reads the task states (one server-side pass of the state bucket) and
the durable consumers of the app's task names, and computes per task name: throughput
over a window, consumer lag and ack pending, p50/p95 of queue wait, run time and time to
completion, and the retry and dead-letter rates. ``jsflow stats`` prints it; the gateway
serves it.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from jsflow._js import js_errors, map_nats_errors
from jsflow.tasks.backend import TaskBackend
from jsflow.tasks.state import TaskInfo
from jsflow.tasks.status import TaskStatus
from jsflow.tasks.streams import TASK_STREAM
from jsflow.tasks.worker import durable_name

__all__ = ["TaskStats", "task_stats"]

_FAILED = (TaskStatus.FAILED, TaskStatus.DEAD)


@dataclass(frozen=True, slots=True)
class TaskStats:
    """The KPIs of one task name (seconds; rates are fractions of the finished tasks)."""

    name: str
    total: int
    pending: int
    running: int
    succeeded: int
    failed: int
    cancelled: int
    finished_in_window: int
    throughput_per_s: float
    lag: int
    ack_pending: int
    queue_wait_p50: float
    queue_wait_p95: float
    run_time_p50: float
    run_time_p95: float
    completion_p50: float
    completion_p95: float
    retry_rate: float
    dead_letter_rate: float

    def as_dict(self) -> dict[str, Any]:
        """Plain values (for JSON)."""
        return asdict(self)


def _quantile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _summarize(
    name: str, infos: list[TaskInfo], window: float, now: float, consumer: Any
) -> TaskStats:
    finished = [i for i in infos if i.status.terminal]
    recent = [i for i in finished if i.finished_at >= now - window]
    started = [i for i in infos if i.started_at]
    waits = [max(0.0, i.started_at - i.created_at) for i in started if i.attempt <= 1]
    runs = [max(0.0, i.finished_at - i.started_at) for i in finished if i.started_at]
    completions = [max(0.0, i.finished_at - i.created_at) for i in finished]
    count = {s: sum(1 for i in infos if i.status is s) for s in TaskStatus}
    done = len(finished) or 1
    return TaskStats(
        name=name,
        total=len(infos),
        pending=count[TaskStatus.PENDING] + count[TaskStatus.RETRYING],
        running=count[TaskStatus.RUNNING],
        succeeded=count[TaskStatus.SUCCEEDED],
        failed=count[TaskStatus.FAILED] + count[TaskStatus.DEAD],
        cancelled=count[TaskStatus.CANCELLED],
        finished_in_window=len(recent),
        throughput_per_s=round(len(recent) / window, 3),
        lag=int(consumer.num_pending or 0) if consumer is not None else 0,
        ack_pending=int(consumer.num_ack_pending or 0) if consumer is not None else 0,
        queue_wait_p50=_quantile(waits, 0.5),
        queue_wait_p95=_quantile(waits, 0.95),
        run_time_p50=_quantile(runs, 0.5),
        run_time_p95=_quantile(runs, 0.95),
        completion_p50=_quantile(completions, 0.5),
        completion_p95=_quantile(completions, 0.95),
        retry_rate=round(sum(1 for i in finished if i.attempt > 1) / done, 4),
        dead_letter_rate=round(sum(1 for i in finished if i.status in _FAILED) / done, 4),
    )


async def task_stats(
    backend: TaskBackend, *, window: float = 300.0, names: Iterable[str] = ()
) -> list[TaskStats]:
    """The KPIs of each task name of ``backend``'s app (those of ``names`` too, even with
    no task yet), over the last ``window`` seconds for throughput; sorted by name."""
    infos = await backend.store.snapshot()
    by_name: dict[str, list[TaskInfo]] = {n: [] for n in names}
    for info in infos:
        by_name.setdefault(info.name, []).append(info)
    now = time.time()
    out = []
    for name in sorted(by_name):
        consumer = None
        with map_nats_errors(subject=TASK_STREAM):
            try:
                consumer = await backend.client.js.consumer_info(
                    TASK_STREAM, durable_name(name, backend.app)
                )
            except js_errors.NotFoundError:
                consumer = None  # no worker ever ran this task name
        out.append(_summarize(name, by_name[name], window, now, consumer))
    return out
