"""Apps with different names never run, follow, route or schedule each other's tasks, even
under one task name and one task id; ``isolated=False`` shares the default app's names."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from typing import Any

import pytest

import jsflow
from jsflow.tasks.app import App, TaskFunction
from jsflow.tasks.context import current_task
from jsflow.tasks.events import TaskEvent
from jsflow.tasks.router import EventRouter
from jsflow.tasks.streams import (
    DEFAULT_APP,
    STATE_BUCKET,
    TASK_STREAM,
    request_subject,
    schedule_subject,
    state_bucket,
    task_filter,
    task_token,
)
from jsflow.tasks.worker import durable_name
from tests.support.names import uniq
from tests.support.polling import eventually
from tests.support.streams import request_counts, stream_exists

pytestmark = pytest.mark.asyncio(loop_scope="session")


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
        assert await request_counts(jsflow_client, task_token(app.scope, name)) == {
            request_subject(task_token(app.scope, name), task_id): 1
        }, label
    assert await request_counts(jsflow_client, name) == {}


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
        assert await request_counts(jsflow_client, name) == {request_subject(name, bank.id): 1}
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
                await eventually(
                    lambda: stream_exists(jsflow_client, router.stream),
                    f"the router creating {router.stream}",
                )
                # when one domain event is published
                await jsflow_client.js.publish(f"{prefix}.paid", b'{"invoice": 9}')
                await eventually(lambda: bool(ran["billing"]), "billing's task run")
                await asyncio.sleep(0.5)  # room for a wrong delivery
        finally:
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runner
    # then billing's worker ran it, the default app's never did
    assert ran == {"billing": [{"invoice": 9}], "default": []}
    requested = await request_counts(jsflow_client, task_token(billing.scope, name))
    assert sum(requested.values()) == 1
    assert await request_counts(jsflow_client, name) == {}


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
            await eventually(lambda: any(x == 6 for _, x in runs["billing"]), "a recurring tick")
        finally:
            await schedule.cancel()
        await asyncio.sleep(0.5)  # room for a wrong delivery
    assert (at.id, 5) in runs["billing"]
    assert runs["default"] == []
