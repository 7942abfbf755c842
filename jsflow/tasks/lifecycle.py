"""The task state machine: every transition of a ``TaskState``, pure (no I/O).

Each transition takes the state read from the store and changes it in place, or raises
:class:`Declined` when it does not apply to that state (another worker, a canceller or a
resolver moved first). The store applies them by compare-and-set
(:meth:`jsflow.tasks.state.TaskStore.transition`), so of two racing writers exactly one
wins and the loser re-reads and asks again. The legal status changes are
:data:`TRANSITIONS`::

    PENDING ─start→ RUNNING ─finish→ SUCCEEDED | FAILED | DEAD | CANCELLED
       │               └─retry→ RETRYING ─start→ RUNNING ...
       └─cancel / dependency failed / dead→ CANCELLED | DEAD
    FAILED | DEAD ─replay→ PENDING (attempt 0)

Terminal states change only by :func:`replay`. Error texts are bounded before they are
stored (:func:`bound_error`), whatever an exception holds.
"""

from __future__ import annotations

import time
import traceback

from jsflow._proto import task_pb2
from jsflow.tasks.status import TaskStatus

__all__ = [
    "MAX_ERROR_MESSAGE",
    "MAX_ERROR_TYPE",
    "MAX_TRACEBACK",
    "RUNNABLE",
    "TRANSITIONS",
    "CancelRequested",
    "Declined",
    "StillRunning",
    "add_dependent",
    "bound_error",
    "bound_traceback",
    "cancel",
    "cancel_for_dependency",
    "error_texts",
    "finish",
    "new_state",
    "release",
    "replay",
    "request_cancel",
    "retry",
    "set_status",
    "start",
    "status_of",
    "traceback_text",
]

TaskState = task_pb2.TaskState

MAX_ERROR_TYPE = 200
MAX_ERROR_MESSAGE = 4096
MAX_TRACEBACK = 8192  # the traceback's last frames are kept: they say where it failed
# Statuses an attempt may start from (RUNNING: a redelivery taking over a crashed attempt).
RUNNABLE = (TaskStatus.PENDING, TaskStatus.RETRYING, TaskStatus.RUNNING)

_S = TaskStatus
TRANSITIONS: frozenset[tuple[TaskStatus, TaskStatus]] = frozenset(
    {
        (_S.PENDING, _S.RUNNING),
        (_S.RETRYING, _S.RUNNING),
        (_S.RUNNING, _S.RUNNING),  # a redelivery takes over a crashed attempt
        (_S.RUNNING, _S.RETRYING),
        *((s, t) for s in RUNNABLE for t in (_S.SUCCEEDED, _S.FAILED, _S.DEAD, _S.CANCELLED)),
        (_S.FAILED, _S.PENDING),
        (_S.DEAD, _S.PENDING),
    }
)
"""Every (from, to) status change a transition may make."""


class Declined(Exception):
    """Internal: a transition does not apply to the state read (nothing is written)."""


class CancelRequested(Exception):
    """Internal: :func:`retry` found the task cancelled: finish it as cancelled instead."""


class StillRunning(Exception):
    """Internal: :func:`cancel` found the task running (its worker must interrupt it)."""


def status_of(state: TaskState) -> TaskStatus:
    """The :class:`TaskStatus` of a ``TaskState``."""
    return TaskStatus.from_proto(state.status)


def set_status(state: TaskState, status: TaskStatus) -> None:
    """Set the status (and ``finished_at`` for terminal ones)."""
    state.status = status.to_proto()  # type: ignore[assignment]
    if status.terminal:
        state.finished_at = time.time()


def _truncate(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` UTF-8 bytes (valid UTF-8: lone surrogates become
    ``?``), marked with its original length when cut."""
    data = text.encode("utf-8", "replace")
    if len(data) <= limit:
        return data.decode("utf-8")
    suffix = f"... ({len(text)} chars)"
    return data[: limit - len(suffix)].decode("utf-8", "ignore") + suffix


def bound_error(error_type: str, error_message: str) -> tuple[str, str]:
    """``(error_type, error_message)`` cut to :data:`MAX_ERROR_TYPE` and
    :data:`MAX_ERROR_MESSAGE` UTF-8 bytes."""
    return _truncate(error_type, MAX_ERROR_TYPE), _truncate(error_message, MAX_ERROR_MESSAGE)


def traceback_text(exc: BaseException) -> str:
    """``exc``'s formatted traceback, at most :data:`MAX_TRACEBACK` UTF-8 bytes (the end is
    kept: the innermost frames and the exception line)."""
    try:
        text = "".join(traceback.format_exception(exc))
    except Exception:  # a broken __str__ or frame must not lose the outcome
        return ""
    return bound_traceback(text)


def bound_traceback(text: str) -> str:
    """``text`` cut to its last :data:`MAX_TRACEBACK` UTF-8 bytes, marked when cut."""
    data = text.encode("utf-8", "replace")
    if len(data) <= MAX_TRACEBACK:
        return data.decode("utf-8")
    head = "... (traceback cut)\n"
    return head + data[-(MAX_TRACEBACK - len(head)) :].decode("utf-8", "ignore")


def error_texts(exc: BaseException) -> tuple[str, str]:
    """The (bounded) error type and message recorded for ``exc``, whatever it holds."""
    try:
        message = str(exc)
    except Exception:  # a __str__ that raises must not lose the outcome
        message = f"<unprintable {type(exc).__name__}>"
    return bound_error(type(exc).__name__, message)


def new_state(
    task_id: str, name: str, args: bytes, args_ref: str = "", *, released: bool = True
) -> TaskState:
    """A fresh ``PENDING`` state (``released=False``: waiting for its dependencies)."""
    state = TaskState(id=task_id, name=name, args=args, args_ref=args_ref, released=released)
    state.created_at = time.time()
    set_status(state, TaskStatus.PENDING)
    return state


def start(state: TaskState, *, worker: str, attempt: int | None = None) -> None:
    """Start the next attempt on ``worker``. With ``attempt`` (the attempt number read
    before), only if no other attempt started since."""
    if status_of(state) not in RUNNABLE or state.cancel_requested:
        raise Declined
    if attempt is not None and state.attempt != attempt:
        raise Declined
    state.attempt += 1
    set_status(state, TaskStatus.RUNNING)
    state.worker = worker
    state.started_at = time.time()


def retry(
    state: TaskState, *, attempt: int, error_type: str, error_message: str, traceback: str = ""
) -> None:
    """Attempt ``attempt`` failed and will be retried; :class:`CancelRequested` when the
    task was cancelled meanwhile (a cancelled task is not retried)."""
    if status_of(state) is not TaskStatus.RUNNING or state.attempt != attempt:
        raise Declined
    if state.cancel_requested:
        raise CancelRequested
    set_status(state, TaskStatus.RETRYING)
    state.error_type, state.error_message = bound_error(error_type, error_message)
    state.traceback = bound_traceback(traceback)


def finish(
    state: TaskState,
    status: TaskStatus,
    *,
    attempt: int | None = None,
    error_type: str = "",
    error_message: str = "",
    traceback: str = "",
    result: tuple[bytes, str] | None = None,
) -> None:
    """Record the terminal ``status`` (with ``attempt``: only the outcome of that running
    attempt; without: whatever runs, e.g. a task dead before it could start)."""
    assert status.terminal, status
    current = status_of(state)
    if current.terminal:
        raise Declined
    if attempt is not None and (current is not TaskStatus.RUNNING or state.attempt != attempt):
        raise Declined
    set_status(state, status)
    state.error_type, state.error_message = bound_error(error_type, error_message)
    state.traceback = bound_traceback(traceback)
    if result is not None:
        state.result, state.result_ref = result


def cancel(state: TaskState) -> None:
    """Cancel a task that is not running; :class:`StillRunning` when it runs."""
    status = status_of(state)
    if status.terminal or state.cancel_requested:
        raise Declined
    if status is TaskStatus.RUNNING:
        raise StillRunning
    set_status(state, TaskStatus.CANCELLED)
    state.error_type = "TaskCancelledError"
    state.error_message = "cancelled"


def request_cancel(state: TaskState) -> None:
    """Flag a task for cancellation by whoever runs it next (this or the next attempt)."""
    if status_of(state).terminal or state.cancel_requested:
        raise Declined
    state.cancel_requested = True


def cancel_for_dependency(state: TaskState, cause: str) -> None:
    """Cancel a waiting task because a dependency did not succeed (``cause`` says which)."""
    if state.released or status_of(state).terminal:
        raise Declined
    set_status(state, TaskStatus.CANCELLED)
    state.error_type, state.error_message = bound_error("DependencyFailed", cause)


def release(state: TaskState) -> None:
    """Mark a waiting task released (its request is published: every dependency
    succeeded). A terminal task is left alone, so its write's retention TTL stays."""
    if state.released or status_of(state).terminal:
        raise Declined
    state.released = True


def add_dependent(dep: TaskState, task_id: str) -> None:
    """Register ``task_id`` as waiting for ``dep``; a finished dependency needs no
    registration (its dependents resolve from its state), and writing it would replace
    the retention TTL its terminal write carries."""
    if task_id in dep.dependents or status_of(dep).terminal:
        raise Declined
    dep.dependents.append(task_id)


def replay(state: TaskState) -> None:
    """Run a ``FAILED`` or ``DEAD`` task again from attempt 1."""
    if status_of(state) not in (TaskStatus.FAILED, TaskStatus.DEAD):
        raise Declined
    set_status(state, TaskStatus.PENDING)
    state.attempt = 0
    state.error_type = state.error_message = state.traceback = ""
    state.finished_at = 0.0
    state.cancel_requested = False
