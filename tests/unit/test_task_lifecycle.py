"""The task state machine, without a server: every transition either applies or declines,
and no sequence of them makes a status change the machine does not allow."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from jsflow.tasks import lifecycle
from jsflow.tasks.lifecycle import (
    MAX_ERROR_MESSAGE,
    MAX_ERROR_TYPE,
    TRANSITIONS,
    CancelRequested,
    Declined,
    StillRunning,
    TaskState,
    status_of,
)
from jsflow.tasks.status import TaskStatus

TERMINALS = [s for s in TaskStatus if s.terminal]
texts = st.text(max_size=6000)


class TaskLifecycle(RuleBasedStateMachine):
    """One task's state, changed only by the lifecycle's transitions, as the store applies
    them: on a copy, written only when the transition did not decline."""

    def __init__(self) -> None:
        super().__init__()
        self.state = lifecycle.new_state("t1", "work", b"{}", released=True)
        self.history: list[tuple[TaskStatus, TaskStatus, str]] = []
        self.previous_attempt = 0

    def _apply(self, name: str, fn: object) -> None:
        candidate = TaskState()
        candidate.CopyFrom(self.state)
        before = status_of(self.state)
        try:
            fn(candidate)  # type: ignore[operator]
        except (Declined, StillRunning, CancelRequested):
            return
        after = status_of(candidate)
        self.history.append((before, after, name))
        self.previous_attempt = self.state.attempt
        self.state = candidate

    @rule(stale=st.booleans())
    def start(self, stale: bool) -> None:
        read = self.state.attempt - 1 if stale else self.state.attempt
        self._apply("start", lambda s: lifecycle.start(s, worker="w", attempt=read))

    @rule(error_type=texts, message=texts, stale=st.booleans())
    def retry(self, error_type: str, message: str, stale: bool) -> None:
        attempt = self.state.attempt + (1 if stale else 0)
        self._apply(
            "retry",
            lambda s: lifecycle.retry(
                s, attempt=attempt, error_type=error_type, error_message=message
            ),
        )

    @rule(status=st.sampled_from(TERMINALS), with_attempt=st.booleans(), message=texts)
    def finish(self, status: TaskStatus, with_attempt: bool, message: str) -> None:
        attempt = self.state.attempt if with_attempt else None
        self._apply(
            "finish",
            lambda s: lifecycle.finish(
                s, status, attempt=attempt, error_type="E", error_message=message
            ),
        )

    @rule()
    def cancel(self) -> None:
        self._apply("cancel", lifecycle.cancel)

    @rule()
    def request_cancel(self) -> None:
        self._apply("request_cancel", lifecycle.request_cancel)

    @rule(cause=texts)
    def dependency_failed(self, cause: str) -> None:
        self._apply("dependency", lambda s: lifecycle.cancel_for_dependency(s, cause))

    @rule()
    def unrelease(self) -> None:
        self.state.released = False  # a dependent waiting for its dependencies

    @rule()
    def release(self) -> None:
        self._apply("release", lifecycle.release)

    @rule()
    def replay(self) -> None:
        self._apply("replay", lifecycle.replay)

    @invariant()
    def every_status_change_is_allowed(self) -> None:
        for before, after, name in self.history[-1:]:
            if before != after or (before is TaskStatus.RUNNING and name == "start"):
                assert (before, after) in TRANSITIONS, (before, after, name)

    @invariant()
    def only_replay_leaves_a_terminal_status(self) -> None:
        for before, after, name in self.history[-1:]:
            if before.terminal and after != before:
                assert name == "replay" and after is TaskStatus.PENDING

    @invariant()
    def finished_at_is_set_exactly_for_terminal_states(self) -> None:
        assert (self.state.finished_at > 0) == status_of(self.state).terminal

    @invariant()
    def attempts_only_grow_until_a_replay(self) -> None:
        if self.history and self.history[-1][2] == "replay":
            assert self.state.attempt == 0
        else:
            assert self.state.attempt >= self.previous_attempt

    @invariant()
    def recorded_errors_are_bounded(self) -> None:
        assert len(self.state.error_type.encode()) <= MAX_ERROR_TYPE
        assert len(self.state.error_message.encode()) <= MAX_ERROR_MESSAGE

    @invariant()
    def a_terminal_task_is_never_flagged_anew(self) -> None:
        if self.history and self.history[-1][2] == "request_cancel":
            assert not status_of(self.state).terminal

    @precondition(lambda self: self.state.cancel_requested)
    @rule()
    def a_cancel_requested_task_never_starts(self) -> None:
        before = self.state.attempt
        self.start(stale=False)
        assert self.state.attempt == before


TestTaskLifecycle = TaskLifecycle.TestCase
TestTaskLifecycle.settings = settings(max_examples=200, stateful_step_count=30, deadline=None)


@given(st.text(max_size=20_000), st.text(max_size=2000))
def test_error_texts_are_bounded_valid_utf8_whatever_the_exception_holds(
    message: str, kind: str
) -> None:
    error_type, error_message = lifecycle.bound_error(kind, message)
    assert len(error_type.encode()) <= MAX_ERROR_TYPE
    assert len(error_message.encode()) <= MAX_ERROR_MESSAGE
    if len(message.encode("utf-8", "replace")) <= MAX_ERROR_MESSAGE:
        assert error_message == message.encode("utf-8", "replace").decode()


def test_a_running_task_is_cancelled_through_its_worker_not_directly() -> None:
    state = lifecycle.new_state("t", "work", b"")
    lifecycle.start(state, worker="w")
    try:
        lifecycle.cancel(state)
    except StillRunning:
        pass
    else:
        raise AssertionError("a running task must be cancelled by its worker")
    lifecycle.request_cancel(state)
    assert state.cancel_requested and status_of(state) is TaskStatus.RUNNING
