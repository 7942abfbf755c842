"""Eager mode (``app.eager()``, the ``jsflow_eager`` fixture): a submit runs the task inline
and returns with its outcome recorded, by the attempt code a worker runs: retries, timeout,
failures (the same TaskFailedError as a worker's), events, progress, dependency results,
cancel; dependencies that have not finished are refused before the task exists."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

import jsflow
from jsflow.errors import TaskCancelledError, TaskError, TaskFailedError
from jsflow.tasks.app import App
from jsflow.tasks.context import current_task
from jsflow.tasks.status import TaskStatus
from jsflow.testing import bound
from tests.support.names import uniq
from tests.support.polling import eventually

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_submit_returns_a_handle_whose_result_is_already_there(
    jsflow_client: jsflow.Client,
) -> None:
    # given an app in eager mode and no worker at all
    app = App(jsflow_client, "t")

    @app.task(name=uniq("add"))
    async def add(a: int, b: int) -> int:
        return a + b

    with app.eager():
        # when a call is submitted
        handle = await add.submit(2, b=3)
    # then it has run: the result is there without waiting, recorded as a worker would
    assert await handle.result(timeout=0) == 5
    info = await handle.info()
    assert info.status is TaskStatus.SUCCEEDED
    assert info.attempt == 1
    assert info.worker.startswith("eager-")


async def test_a_task_that_fails_then_succeeds_is_retried_inline(
    jsflow_client: jsflow.Client,
) -> None:
    # given a task failing its first attempt, with the default backoff (1 s, skipped here)
    app = App(jsflow_client, "t")
    calls: list[int] = []

    @app.task(name=uniq("flaky"), retries=2)
    async def flaky() -> str:
        calls.append(current_task().attempt)
        if len(calls) == 1:
            raise ConnectionError("try again")
        return "ok"

    with app.eager():
        handle = await flaky.submit()
    # then the second attempt's result is there, and the retry is in the task's log
    assert await handle.result(timeout=0) == "ok"
    assert calls == [1, 2]
    assert (await handle.info()).attempt == 2
    kinds = [e.kind async for e in handle.events(idle_timeout=10)]
    assert kinds == ["requested", "started", "retrying", "started", "completed"]


async def test_a_task_that_always_fails_raises_the_task_failed_error_a_worker_gives(
    jsflow_client: jsflow.Client,
) -> None:
    # given a task that always raises, with one retry
    app = App(jsflow_client, "t")

    @app.task(name=uniq("boom"), retries=1, backoff=0.0)
    async def boom(n: int) -> None:
        raise ValueError(f"bad input {n}")

    # when it runs once eagerly and once on a worker
    with app.eager():
        eager = await boom.submit(7)
    with pytest.raises(TaskFailedError) as eager_error:
        await eager.result(timeout=0)
    async with app.worker():
        queued = await boom.submit(7)
        with pytest.raises(TaskFailedError) as worker_error:
            await queued.result(timeout=30)
    # then both record the same outcome and raise the same error
    assert (eager_error.value.error_type, eager_error.value.error_message) == (
        worker_error.value.error_type,
        worker_error.value.error_message,
    )
    assert eager_error.value.error_type == "ValueError"
    assert eager_error.value.error_message == "bad input 7"
    assert "bad input 7" in eager_error.value.traceback
    for handle in (eager, queued):
        info = await handle.info()
        assert (info.status, info.attempt) == (TaskStatus.FAILED, 2)


async def test_a_task_past_its_timeout_fails_with_task_timeout_error(
    jsflow_client: jsflow.Client,
) -> None:
    # given a task that takes far longer than its timeout
    app = App(jsflow_client, "t")

    @app.task(name=uniq("slow"), timeout=0.2, retries=0)
    async def slow() -> None:
        await asyncio.sleep(60)

    with app.eager():
        handle = await slow.submit()
    # then the attempt was ended and the task failed with the worker's timeout error
    with pytest.raises(TaskFailedError) as error:
        await handle.result(timeout=0)
    assert error.value.error_type == "TaskTimeoutError"
    assert await handle.status() is TaskStatus.FAILED


async def test_events_and_progress_are_recorded_through_the_server(
    jsflow_client: jsflow.Client,
) -> None:
    # given a task that reports progress
    app = App(jsflow_client, "t")

    @app.task(name=uniq("report"))
    async def report() -> int:
        await current_task().progress(50, "half way")
        return 1

    with app.eager():
        handle = await report.submit()
    # then its events are in the stream, as a worker's would be
    events = [e async for e in handle.events(idle_timeout=10)]
    assert [e.kind for e in events] == ["requested", "started", "progress", "completed"]
    assert (events[2].progress, events[2].message) == (50.0, "half way")


async def test_a_chord_reads_its_groups_results_inline(jsflow_client: jsflow.Client) -> None:
    # given a group of squares and a total depending on them, all submitted eagerly
    app = App(jsflow_client, "t")

    @app.task(name=uniq("square"))
    async def square(n: int) -> int:
        return n * n

    @app.task(name=uniq("total"))
    async def total() -> int:
        return sum(await current_task().dependency_results())

    with app.eager():
        group = await square.submit_many([(1,), (2,), (3,)])
        chord = await total.submit(depends_on=group)
    # then every member ran, and the total read their results
    assert [await h.result(timeout=0) for h in group] == [1, 4, 9]
    assert await chord.result(timeout=0) == 14


async def test_a_failed_dependency_cancels_the_dependent_as_with_workers(
    jsflow_client: jsflow.Client,
) -> None:
    # given a dependency that failed
    app = App(jsflow_client, "t")
    ran: list[str] = []

    @app.task(name=uniq("boom"), retries=0)
    async def boom() -> None:
        raise RuntimeError("no")

    @app.task(name=uniq("after"))
    async def after() -> None:
        ran.append("after")

    with app.eager():
        failed = await boom.submit()
        dependent = await after.submit(depends_on=[failed])
    # then the dependent never ran and its result says why
    with pytest.raises(TaskCancelledError, match="RuntimeError"):
        await dependent.result(timeout=0)
    assert ran == []


async def test_a_dependency_not_finished_is_refused_before_the_task_exists(
    jsflow_client: jsflow.Client,
) -> None:
    # given a dependency queued outside eager mode (no worker runs it)
    app = App(jsflow_client, uniq("dep"))

    @app.task(name="first")
    async def first() -> int:
        return 1

    @app.task(name="second")
    async def second() -> int:
        return 2

    pending = await first.submit()
    # when a dependent is submitted eagerly, then it is refused, naming the dependency
    with app.eager(), pytest.raises(TaskError, match=pending.id):
        await second.submit(depends_on=[pending])
    infos = await (await app.backend()).store.list()
    assert [i.name for i in infos] == ["first"]


async def test_a_cancel_interrupts_the_running_task(jsflow_client: jsflow.Client) -> None:
    # given a long task running eagerly in one coroutine
    app = App(jsflow_client, "t")
    task_id = uniq("long")

    @app.task(name=uniq("long"))
    async def long() -> None:
        await asyncio.sleep(60)

    with app.eager():
        submitting = asyncio.create_task(long.submit_with(task_id=task_id))

        async def running() -> bool:
            state = await (await app.backend()).store.get(task_id)
            return state is not None and state.attempt == 1

        await eventually(running, "the task starting")
        # when another coroutine cancels it
        assert await (await app.handle(task_id)).cancel()
        handle = await submitting
    # then the attempt was interrupted and the task is cancelled
    with pytest.raises(TaskCancelledError):
        await handle.result(timeout=0)
    assert await handle.status() is TaskStatus.CANCELLED


async def test_a_task_submitting_another_gets_its_result_inline(
    jsflow_client: jsflow.Client,
) -> None:
    # given a task that submits a child task and awaits its result
    app = App(jsflow_client, "t")

    @app.task(name=uniq("child"))
    async def child(n: int) -> int:
        return n + 1

    @app.task(name=uniq("parent"))
    async def parent(n: int) -> int:
        return await (await child.submit(n)).result(timeout=0) * 10

    with app.eager():
        handle = await parent.submit(1)
    assert await handle.result(timeout=0) == 20


async def test_leaving_the_block_queues_submits_again(jsflow_client: jsflow.Client) -> None:
    # given an app whose eager block has ended
    app = App(jsflow_client, "t")

    @app.task(name=uniq("later"))
    async def later() -> None:
        return None

    with app.eager(), app.eager():  # blocks nest
        pass
    # when a call is submitted, then it waits for a worker
    handle = await later.submit()
    assert app.eager_runner is None
    assert await handle.status() is TaskStatus.PENDING


# -- as a user writes it: a module-level app, the jsflow_eager fixture -------------------------

shop = App(None, "shop")


@shop.task
async def greet(name: str) -> str:
    return f"hello {name}"


@pytest_asyncio.fixture(loop_scope="session")
async def jsflow_app(jsflow_client: jsflow.Client) -> AsyncIterator[App]:
    """The project's app, bound in a namespace of its own (what the ini option does)."""
    async with bound(shop, jsflow_client) as app:
        yield app


async def test_the_fixture_runs_a_users_task_inline(jsflow_eager: App) -> None:
    # given the user's app in eager mode, when a task is submitted as usual
    handle = await greet.submit("ada")
    # then its result is there at once
    assert await handle.result(timeout=0) == "hello ada"
    assert await handle.status() is TaskStatus.SUCCEEDED
