"""Cancel, DAG dependencies, artifacts and many waiters, against a real nats-server."""

from __future__ import annotations

import asyncio
import uuid

import pytest

import jsflow
from jsflow.tasks.app import App
from jsflow.tasks.errors import DependencyCycleError, TaskNotFoundError
from jsflow.tasks.status import TaskStatus
from jsflow.tasks.streams import state_bucket

pytestmark = pytest.mark.asyncio(loop_scope="session")


def uniq(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


async def test_cancel_pending_task_never_starts(jsflow_client: jsflow.Client) -> None:
    # given a task submitted while no worker runs
    app = App(jsflow_client, "t")
    ran: list[int] = []

    @app.task(name=uniq("never"))
    async def never() -> None:
        ran.append(1)

    handle = await never.submit()
    # when it is cancelled, then a worker started later never runs it
    assert await handle.cancel() is True
    async with app.worker():
        with pytest.raises(jsflow.TaskCancelledError):
            await handle.result(timeout=10)
        marker = await never.submit()  # a later task proves the request was consumed
        await marker.result(timeout=10)
    assert ran == [1]
    assert await handle.status() is TaskStatus.CANCELLED
    assert await handle.cancel() is False  # already finished


async def test_cancel_running_task_interrupts_its_coroutine(jsflow_client: jsflow.Client) -> None:
    # given a long task running on a worker
    app = App(jsflow_client, "t")
    started, interrupted = asyncio.Event(), asyncio.Event()

    @app.task(name=uniq("long"))
    async def long() -> None:
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            interrupted.set()
            raise

    async with app.worker():
        handle = await long.submit()
        await asyncio.wait_for(started.wait(), 10)
        # when it is cancelled
        assert await handle.cancel() is True
        # then its coroutine is cancelled within a second and result() says so
        await asyncio.wait_for(interrupted.wait(), 1.0)
        with pytest.raises(jsflow.TaskCancelledError):
            await handle.result(timeout=10)
    assert await handle.status() is TaskStatus.CANCELLED
    assert [e.kind async for e in handle.events(idle_timeout=5)][-1] == "cancelled"


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


async def test_large_result_round_trips_through_the_object_store(
    jsflow_client: jsflow.Client,
) -> None:
    # given a task whose argument and result exceed the artifact threshold (>1 MiB result)
    app = App(jsflow_client, "t", artifact_threshold=64 * 1024)

    @app.task(name=uniq("big"))
    async def big(blob: str) -> str:
        return blob * 20

    arg = "x" * 100_000
    async with app.worker():
        handle = await big.submit(arg)
        result = await handle.result(timeout=20)
    # then the result is intact and the stored state only carries references
    assert result == arg * 20 and len(result) > 1024 * 1024
    backend = await app.backend()
    state = await backend.store.get(handle.id)
    assert state is not None
    assert state.result_ref and not state.result and state.args_ref and not state.args


async def test_thousand_pending_handles_share_one_consumer(jsflow_client: jsflow.Client) -> None:
    # given 1,200 submitted tasks and a waiter on each result, with no worker yet
    app = App(jsflow_client, "t")

    @app.task(name=uniq("many"))
    async def many(i: int) -> int:
        return i

    handles = await asyncio.gather(*(many.submit(i) for i in range(1200)))
    waiters = [asyncio.ensure_future(h.result(timeout=60)) for h in handles]
    await asyncio.sleep(0.5)
    # then the task-state bucket has a single consumer however many wait
    info = await jsflow_client.js.stream_info(f"KV_{state_bucket(app.scope)}")
    assert info.state.consumer_count <= 2  # the shared watch (+ at most one keys() scan)
    # and when a worker runs, every waiter gets its result
    async with app.worker(concurrency=64):
        results = await asyncio.gather(*waiters)
    assert results == list(range(1200))
