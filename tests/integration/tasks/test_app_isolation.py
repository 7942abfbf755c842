"""Wrong-typed or out-of-range task options and ids fail with a typed error before any I/O,
and apps with different names never run each other's tasks."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import math
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest

import jsflow
from jsflow.cli import main
from jsflow.errors import ConfigError, InvalidNameError
from jsflow.tasks.app import App, TaskFunction
from jsflow.tasks.context import current_task
from jsflow.tasks.events import TaskEvent
from jsflow.tasks.router import EventRouter
from jsflow.tasks.streams import (
    DEFAULT_APP,
    STATE_BUCKET,
    TASK_STREAM,
    cancel_subject,
    request_subject,
    schedule_subject,
    state_bucket,
    task_filter,
    task_token,
)
from jsflow.tasks.worker import durable_name


def uniq(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def _offline_app() -> App:
    """An app with no client: anything that reached I/O would fail with "no client"."""
    return App(None)


def _task(**options: Any) -> Callable[[], Any]:
    def define() -> Any:
        @_offline_app().task(**options)
        async def job() -> None:
            return None

        return job

    return define


@pytest.mark.parametrize(
    ("make", "parameter"),
    [
        (_task(retries="3"), "retries"),
        (_task(retries=-1), "retries"),
        (_task(retries=10**9), "retries"),
        (_task(timeout="5"), "timeout"),
        (_task(timeout=math.nan), "timeout"),
        (_task(concurrency=0), "concurrency"),
        (_task(concurrency=2.5), "concurrency"),
        (_task(backoff="1"), "backoff"),
        (_task(rate_limit=(1,)), "rate_limit"),
        (_task(rate_limit=(math.inf, 1)), "rate_limit"),
        (_task(rate_limit=5), "rate_limit"),
        (lambda: App(None, artifact_threshold="x"), "artifact_threshold"),  # type: ignore[arg-type]
        (lambda: App(None, artifact_threshold=0), "artifact_threshold"),
        (lambda: App(None, retention=math.nan), "retention"),
        (lambda: App(None, retention=dt.timedelta.max), "retention"),
        (lambda: App(None, request_max_age=1e300), "request_max_age"),
        (lambda: _offline_app().worker(concurrency="x"), "concurrency"),  # type: ignore[arg-type]
        (lambda: _offline_app().worker(ack_wait=math.inf), "ack_wait"),
    ],
)
def test_bad_option_raises_config_error_naming_it(make: Callable[[], Any], parameter: str) -> None:
    app_with_task = _offline_app()

    @app_with_task.task(name="ok")
    async def ok() -> None:
        return None

    with pytest.raises(ConfigError, match=parameter):
        make()


@pytest.mark.asyncio(loop_scope="session")
@pytest.mark.parametrize(
    ("call", "parameter"),
    [
        (lambda job: job.submit_in(1e20), "delay"),
        (lambda job: job.submit_in(math.nan), "delay"),
        (lambda job: job.submit_in("soon"), "delay"),
        (lambda job: job.submit_at(dt.datetime.max.replace(tzinfo=dt.UTC)), "when"),
        (lambda job: job.submit_at(dt.datetime(2030, 1, 1)), "when"),
        (lambda job: job.submit_at("tomorrow"), "when"),
    ],
)
async def test_bad_release_time_raises_config_error_before_io(
    call: Callable[[Any], Any], parameter: str
) -> None:
    job = _task()()
    with pytest.raises(ConfigError, match=parameter):
        await call(job)


@pytest.mark.asyncio(loop_scope="session")
@pytest.mark.parametrize(
    "submit",
    [
        lambda job: job.submit(depends_on=["x" * 5000]),
        lambda job: job.submit(depends_on=["bad id"]),
        lambda job: job.submit_with(task_id="x" * 5000),
        lambda job: job.submit_with(task_id=""),
        lambda job: job.submit_with(task_id="a b"),
    ],
    ids=["dep-5000", "dep-space", "id-5000", "id-empty", "id-space"],
)
async def test_illegal_task_or_dependency_id_fails_before_io(
    submit: Callable[[Any], Any],
) -> None:
    job = _task()()
    with pytest.raises(InvalidNameError):
        await submit(job)


async def _until(done: Callable[[], bool], what: str, limit: float = 15) -> None:
    """Poll ``done`` until true (bounded)."""
    for _ in range(int(limit / 0.05)):
        if done():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{what} did not happen within {limit}s")


async def _requests(client: jsflow.Client, token: str) -> dict[str, int]:
    """The request subjects (and counts) the task stream holds for task token ``token``."""
    info = await client.js.stream_info(TASK_STREAM, subjects_filter=request_subject(token) + ".>")
    return dict(info.state.subjects or {})


@pytest.mark.asyncio(loop_scope="session")
async def test_apps_with_one_task_name_never_run_each_others_requests(
    jsflow_client: jsflow.Client,
) -> None:
    # given two apps of different names (no isolation option: the default) defining one task
    name = uniq("fetch_price")
    ran: dict[str, list[str]] = {"shop": [], "bank": []}
    apps = {label: App(jsflow_client, uniq(label)) for label in ("shop", "bank")}
    assert all(app.isolated and app.scope == app.name for app in apps.values())
    functions = {}
    for label, app in apps.items():

        async def fetch_price(symbol: str, label: str = label) -> str:
            ran[label].append(symbol)
            return f"{label}:{symbol}"

        functions[label] = app.task(name=name)(fetch_price)

    async with asyncio.timeout(30):
        # when only shop's worker runs, and both apps submit the same task id
        async with apps["shop"].worker():
            task_id = uniq("same-id")
            bank = await functions["bank"].submit_with(("EUR",), task_id=task_id)
            shop = await functions["shop"].submit_with(("USD",), task_id=task_id)
            assert await shop.result(timeout=10) == "shop:USD"
            await asyncio.sleep(0.5)  # room for a wrong delivery
        # then shop's worker never ran bank's request
        assert ran == {"shop": ["USD"], "bank": []}
        assert (await bank.info()).status is jsflow.TaskStatus.PENDING
        # and bank's own worker runs bank's request, on bank's arguments
        async with apps["bank"].worker():
            assert await bank.result(timeout=10) == "bank:EUR"
    assert ran == {"shop": ["USD"], "bank": ["EUR"]}
    # each app's requests are on its own subjects, none on the bare (default) ones
    for label, app in apps.items():
        assert await _requests(jsflow_client, task_token(app.scope, name)) == {
            request_subject(task_token(app.scope, name), task_id): 1
        }, label
    assert await _requests(jsflow_client, name) == {}


@pytest.mark.asyncio(loop_scope="session")
async def test_apps_created_with_isolated_false_share_the_default_names(
    jsflow_client: jsflow.Client,
) -> None:
    # given two apps of different names, both created with isolated=False
    name = uniq("shared")
    ran: dict[str, list[str]] = {"shop": [], "bank": []}
    apps = {label: App(jsflow_client, uniq(label), isolated=False) for label in ("shop", "bank")}
    assert all(app.scope == DEFAULT_APP and not app.isolated for app in apps.values())
    functions = {}
    for label, app in apps.items():

        async def fetch_price(symbol: str, label: str = label) -> str:
            ran[label].append(symbol)
            return f"{label}:{symbol}"

        functions[label] = app.task(name=name)(fetch_price)

    async with asyncio.timeout(30):
        # when only shop's worker runs and bank submits
        async with apps["shop"].worker():
            bank = await functions["bank"].submit("EUR")
            # then shop's worker runs bank's request: they share the default app's names
            assert await bank.result(timeout=10) == "shop:EUR"
        assert ran == {"shop": ["EUR"], "bank": []}
        # the bare request subject, the bare durable and the default state bucket
        assert await _requests(jsflow_client, name) == {request_subject(name, bank.id): 1}
        info = await jsflow_client.js.consumer_info(TASK_STREAM, durable_name(name))
        assert info.name == f"jsflow_task_{name}"
        assert state_bucket(apps["bank"].scope) == STATE_BUCKET
        default = App(jsflow_client)
        assert await (await default.backend()).store.get(bank.id) is not None


def _reporting_task(
    app: App, name: str, label: str, release: asyncio.Event
) -> TaskFunction[[], str]:
    """Task ``name`` of ``app``: reports progress naming ``label``, then bank fails at once
    and shop completes once ``release`` is set."""

    @app.task(name=name, retries=0)
    async def report() -> str:
        await current_task().progress(50, label)
        if label == "bank":
            raise RuntimeError("bank declines")
        await release.wait()
        return label

    return report


async def _follow(events: Any) -> list[TaskEvent]:
    return [event async for event in events]


@pytest.mark.asyncio(loop_scope="session")
async def test_two_apps_running_one_task_id_each_follow_only_their_own_events(
    jsflow_client: jsflow.Client,
) -> None:
    # given two apps defining one task name, both submitting the same task id
    name, task_id = uniq("report"), uniq("one.id")
    release = asyncio.Event()
    apps = {label: App(jsflow_client, uniq(label)) for label in ("shop", "bank")}
    fns = {label: _reporting_task(app, name, label, release) for label, app in apps.items()}
    async with asyncio.timeout(30):
        handles = {label: await fn.submit_with(task_id=task_id) for label, fn in fns.items()}
        assert handles["shop"].id == handles["bank"].id == task_id
        # followers started before either runs
        followers = {
            label: asyncio.ensure_future(_follow(h.events(idle_timeout=10)))
            for label, h in handles.items()
        }
        # when both run: bank fails first, shop completes after that
        async with apps["shop"].worker(), apps["bank"].worker():
            assert await handles["bank"].wait(timeout=10) is jsflow.TaskStatus.FAILED
            release.set()
            assert await handles["shop"].result(timeout=10) == "shop"
        seen = {label: await follower for label, follower in followers.items()}
    # then each follower saw its own app's events only, ending at its own terminal event
    for label, terminal in (("shop", "completed"), ("bank", "failed")):
        events = seen[label]
        assert [e.kind for e in events] == ["requested", "started", "progress", terminal], label
        assert [e.message for e in events if e.kind == "progress"] == [label]
        assert {e.task_id for e in events} == {task_id}
    assert seen["bank"][-1].error_message == "bank declines"
    # and the stream holds one log per app under the app's token
    for app in apps.values():
        token = task_token(app.scope, name)
        info = await jsflow_client.js.stream_info(
            TASK_STREAM, subjects_filter=task_filter(task_id, token)
        )
        assert len(info.state.subjects or {}) == 4


@pytest.mark.asyncio(loop_scope="session")
async def test_cancelling_a_running_task_with_a_dotted_id_interrupts_it_by_its_signal(
    jsflow_client: jsflow.Client,
) -> None:
    # given a task of a named app that sleeps 30 s, running under an id holding dots
    app = App(jsflow_client, uniq("orders"))
    started, interrupted = asyncio.Event(), asyncio.Event()

    @app.task(name=uniq("sleepy"), retries=0)
    async def sleepy() -> None:
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            interrupted.set()
            raise

    task_id = f"order.{uuid.uuid4().hex[:8]}.v1"
    signals = await jsflow_client.nc.subscribe(cancel_subject(app.scope, task_id))
    try:
        async with asyncio.timeout(15), app.worker():
            handle = await sleepy.submit_with(task_id=task_id)
            await started.wait()
            # when it is cancelled at once (before the state watch of long attempts starts)
            begin = time.monotonic()
            assert await handle.cancel() is True
            await interrupted.wait()
            took = time.monotonic() - begin
            # then the signal on the app's cancel subject, dotted id and all, interrupted it
            # well before the fallback watch (after 1 s of running) could
            assert (await signals.next_msg(timeout=5)).subject == cancel_subject(app.scope, task_id)
            assert took < 0.9, f"interrupted only after {took:.2f}s"
            with pytest.raises(jsflow.TaskCancelledError):
                await handle.result(timeout=10)
    finally:
        await signals.unsubscribe()
    assert await handle.status() is jsflow.TaskStatus.CANCELLED


async def _router_stream_ready(client: jsflow.Client, stream: str) -> None:
    for _ in range(100):  # the router creates its stream on start
        with contextlib.suppress(Exception):
            await client.js.stream_info(stream)
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"the router never created {stream}")


@pytest.mark.asyncio(loop_scope="session")
async def test_a_router_of_an_app_requests_that_apps_task_and_its_worker_runs_it(
    jsflow_client: jsflow.Client,
) -> None:
    # given a router for app billing, and billing and the default app defining one task name
    prefix, name = uniq("invoice"), uniq("charge")
    billing, default = App(jsflow_client, "billing"), App(jsflow_client)
    ran: dict[str, list[object]] = {"billing": [], "default": []}

    @billing.task(name=name)
    async def charge(event: dict[str, object]) -> None:
        ran["billing"].append(event)

    @default.task(name=name)
    async def charge_default(event: dict[str, object]) -> None:
        ran["default"].append(event)

    router = EventRouter(jsflow_client, stream=uniq("EVB"), durable=uniq("rb"), app=billing)
    router.on(f"{prefix}.paid").request(name)
    assert router.app == billing.scope
    async with asyncio.timeout(30):
        runner = asyncio.ensure_future(router.run())
        try:
            async with billing.worker(), default.worker():
                await _router_stream_ready(jsflow_client, router.stream)
                # when one domain event is published
                await jsflow_client.js.publish(f"{prefix}.paid", b'{"invoice": 9}')
                await _until(lambda: bool(ran["billing"]), "billing's task run")
                await asyncio.sleep(0.5)  # room for a wrong delivery
        finally:
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runner
    # then billing's worker ran it, the default app's never did
    assert ran == {"billing": [{"invoice": 9}], "default": []}
    requested = await _requests(jsflow_client, task_token(billing.scope, name))
    assert sum(requested.values()) == 1
    assert await _requests(jsflow_client, name) == {}


@pytest.mark.asyncio(loop_scope="session")
async def test_schedules_of_an_app_run_on_that_apps_worker(jsflow_client: jsflow.Client) -> None:
    # given app billing and the default app defining one task name, both with workers
    name = uniq("nightly")
    billing, default = App(jsflow_client, "billing"), App(jsflow_client)
    runs: dict[str, list[tuple[str, int]]] = {"billing": [], "default": []}
    fns = {}
    for label, app in (("billing", billing), ("default", default)):

        async def nightly(x: int, label: str = label) -> int:
            runs[label].append((current_task().id, x))
            return x

        fns[label] = app.task(name=name)(nightly)

    async with asyncio.timeout(30), billing.worker(), default.worker():
        # when billing schedules a one-shot call and a recurring one
        at = await fns["billing"].submit_at(dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1), 5)
        schedule = await fns["billing"].schedule(uniq("s"), "@every 1s", 6)
        try:
            assert schedule.subject == schedule_subject(
                task_token(billing.scope, name), schedule.id
            )
            # then both fire on billing's worker
            assert await at.result(timeout=15) == 5
            await _until(lambda: any(x == 6 for _, x in runs["billing"]), "a recurring tick")
        finally:
            await schedule.cancel()
        await asyncio.sleep(0.5)  # room for a wrong delivery
    assert (at.id, 5) in runs["billing"]
    assert runs["default"] == []


@pytest.mark.asyncio(loop_scope="session")
async def test_cli_tasks_list_with_app_lists_that_apps_tasks_only(
    jsflow_server: jsflow.EmbeddedServer,
    jsflow_client: jsflow.Client,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # given a pending task of app N and one of the default app, of one task name
    name = uniq("listed")
    ledger, default = App(jsflow_client, uniq("ledger")), App(jsflow_client)
    fns = {}
    for label, app in (("ledger", ledger), ("default", default)):

        async def listed() -> None:
            return None

        fns[label] = app.task(name=name)(listed)
    mine = await fns["ledger"].submit()
    theirs = await fns["default"].submit()
    capsys.readouterr()

    async def tasks_list(*extra: str) -> tuple[int, str]:
        argv = ["--url", jsflow_server.url, "tasks", "list", "--name", name, *extra]
        code = await asyncio.to_thread(main, argv)
        return code, capsys.readouterr().out

    async with asyncio.timeout(30):
        # when listing with --app N, then only N's task is listed
        code, out = await tasks_list("--app", ledger.name)
        assert code == 0 and mine.id in out and theirs.id not in out
        # and without --app, only the default app's
        code, out = await tasks_list()
        assert code == 0 and theirs.id in out and mine.id not in out


def test_app_name_is_bounded() -> None:
    # an app of its own name puts it in its state bucket's name: at most 64 characters
    with pytest.raises(InvalidNameError):
        App(None, "a" * 65)
    assert App(None, "a" * 64).scope == "a" * 64
    with pytest.raises(ConfigError, match="isolated"):
        App(None, "a", isolated="yes")  # type: ignore[arg-type]
