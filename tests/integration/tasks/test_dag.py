"""Dependencies between tasks (the DAG): dependents run after all their dependencies, a
failure cancels them naming its cause, cycles and unknown tasks are refused, and a
resubmitted dependent still waits."""

from __future__ import annotations

import asyncio

import pytest

import jsflow
from jsflow.tasks.app import App
from jsflow.tasks.errors import DependencyCycleError, TaskNotFoundError
from jsflow.tasks.status import TaskStatus
from jsflow.tasks.worker import durable_name
from tests.support.names import uniq
from tests.support.streams import drained

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_dag_runs_dependents_after_all_dependencies(jsflow_client: jsflow.Client) -> None:
    # given a fan-out / fan-in graph: a -> (b, c) -> d
    app = App(jsflow_client, "t")
    order: list[str] = []

    @app.task(name=uniq("step"))
    async def step(label: str) -> str:
        order.append(label)
        return label

    a = await step.submit("a")
    b = await step.submit("b", depends_on=[a])
    c = await step.submit("c", depends_on=[a])
    d = await step.submit("d", depends_on=[b, c])
    # then nothing past a is released before a worker ran a
    assert await d.status() is TaskStatus.PENDING
    async with app.worker(concurrency=4):
        assert await d.result(timeout=15) == "d"
    assert order[0] == "a" and order[-1] == "d" and sorted(order[1:3]) == ["b", "c"]


async def test_dag_failure_cancels_dependents_naming_the_cause(
    jsflow_client: jsflow.Client,
) -> None:
    # given b depends on a failing a, and c on b
    app = App(jsflow_client, "t")

    @app.task(name=uniq("fails"), retries=0)
    async def fails() -> None:
        raise KeyError("gone")

    @app.task(name=uniq("after"))
    async def after() -> None:
        return None

    a = await fails.submit()
    b = await after.submit(depends_on=[a])
    c = await after.submit(depends_on=[b])
    async with app.worker():
        with pytest.raises(jsflow.TaskFailedError):
            await a.result(timeout=10)
        # then b and c are cancelled, and the error names the failed dependency
        with pytest.raises(jsflow.TaskCancelledError, match=a.id):
            await b.result(timeout=10)
        with pytest.raises(jsflow.TaskCancelledError, match=b.id):
            await c.result(timeout=10)


async def test_dependency_cycle_and_unknown_dependency_are_rejected(
    jsflow_client: jsflow.Client,
) -> None:
    # given a task with an explicit id
    app = App(jsflow_client, "t")

    @app.task(name=uniq("node"))
    async def node() -> None:
        return None

    x = await node.submit_with(task_id=uniq("x"))
    # then depending on itself, or on a task leading back to it, raises a typed error
    with pytest.raises(DependencyCycleError):
        await node.submit_with(task_id=x.id, depends_on=[x.id])
    y = await node.submit_with(task_id=uniq("y"), depends_on=[x])
    with pytest.raises(DependencyCycleError):
        await node.submit_with(task_id=x.id, depends_on=[y])
    with pytest.raises(TaskNotFoundError):
        await node.submit(depends_on=["no-such-task"])


async def test_resubmitting_a_waiting_dependent_does_not_run_it_early(
    jsflow_client: jsflow.Client,
) -> None:
    # given b depending on a, a still running
    app = App(jsflow_client, "t")
    order: list[str] = []
    a_started, a_release = asyncio.Event(), asyncio.Event()

    @app.task(name=uniq("dep"))
    async def step(label: str) -> str:
        order.append(label)
        if label == "a":
            a_started.set()
            await a_release.wait()
        return label

    async with app.worker(concurrency=4):
        a = await step.submit("a")
        await asyncio.wait_for(a_started.wait(), 10)
        b_id = uniq("b")
        b = await step.submit_with(("b",), task_id=b_id, depends_on=[a])
        # when b is submitted again under its id (an idempotent retry of the caller)
        again = await step.submit_with(("b",), task_id=b_id)
        assert again.id == b.id
        await drained(jsflow_client, durable_name(step.name, app.scope), ack_pending=1)
        # then b still waits for a, and runs once after it
        assert await b.status() is TaskStatus.PENDING
        a_release.set()
        assert await b.result(timeout=10) == "b"
    assert order == ["a", "b"]
