"""Wrong-typed or out-of-range task options and ids fail with a typed error before any I/O,
and apps with different names never run each other's tasks."""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import uuid
from collections.abc import Callable
from typing import Any

import pytest

import jsflow
from jsflow.errors import ConfigError, InvalidNameError
from jsflow.tasks.app import App


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


@pytest.mark.asyncio(loop_scope="session")
async def test_isolated_apps_with_one_task_name_never_run_each_others_requests(
    jsflow_client: jsflow.Client,
) -> None:
    name = uniq("fetch_price")
    ran: dict[str, list[str]] = {"shop": [], "bank": []}
    apps = {label: App(jsflow_client, uniq(label), isolated=True) for label in ("shop", "bank")}
    functions = {}
    for label, app in apps.items():

        async def fetch_price(symbol: str, label: str = label) -> str:
            ran[label].append(symbol)
            return f"{label}:{symbol}"

        functions[label] = app.task(name=name)(fetch_price)

    async with asyncio.timeout(30):
        # given only shop's worker runs, and both apps submit the same task id
        async with apps["shop"].worker():
            bank = await functions["bank"].submit_with(("EUR",), task_id="same-id")
            shop = await functions["shop"].submit_with(("USD",), task_id="same-id")
            assert await shop.result(timeout=10) == "shop:USD"
            await asyncio.sleep(0.5)  # room for a wrong delivery
        assert ran == {"shop": ["USD"], "bank": []}
        assert (await bank.info()).status is jsflow.TaskStatus.PENDING
        # then bank's own worker runs bank's request, on bank's arguments
        async with apps["bank"].worker():
            assert await bank.result(timeout=10) == "bank:EUR"
    assert ran == {"shop": ["USD"], "bank": ["EUR"]}


def test_isolated_app_name_is_bounded() -> None:
    with pytest.raises(InvalidNameError):
        App(None, "a" * 65, isolated=True)
    with pytest.raises(ConfigError, match="isolated"):
        App(None, "a", isolated="yes")  # type: ignore[arg-type]
