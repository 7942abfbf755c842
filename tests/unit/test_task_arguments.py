"""Task and app options, ids and release times: wrong-typed or out-of-range values fail
with a typed error naming them, before any I/O (apps without a client; no server)."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable
from typing import Any

import pytest

import jsflow
from jsflow.errors import ConfigError, InvalidNameError
from jsflow.tasks.app import App


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
        (_task(rate_limit=[5]), "rate_limit"),  # a bare number is a rate per second now
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


async def test_retention_must_be_at_least_a_second_or_none() -> None:
    # given the retention rules, then sub-second values are refused before any I/O
    with pytest.raises(jsflow.ConfigError):
        App(None, "t", retention=0.5)
    with pytest.raises(jsflow.ConfigError):
        App(None, "t", retention=dt.timedelta(milliseconds=10))
    # and a timedelta, a number or None are accepted
    assert App(None, "t", retention=dt.timedelta(hours=2)).retention == 7200.0
    assert App(None, "t", retention=5).retention == 5.0
    assert App(None, "t", retention=None).retention is None
    assert App(None, "t").retention == 24 * 3600.0


async def test_request_max_age_must_be_a_positive_duration() -> None:
    for bad in (0, -5, float("inf"), float("nan"), "7d"):
        with pytest.raises(jsflow.ConfigError):
            App(None, "t", request_max_age=bad)  # type: ignore[arg-type]


def test_app_name_is_bounded() -> None:
    # an app of its own name puts it in its state bucket's name: at most 64 characters
    with pytest.raises(InvalidNameError):
        App(None, "a" * 65)
    assert App(None, "a" * 64).scope == "a" * 64
    with pytest.raises(ConfigError, match="isolated"):
        App(None, "a", isolated="yes")  # type: ignore[arg-type]
