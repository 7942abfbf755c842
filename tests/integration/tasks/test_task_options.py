"""Task options users know from Celery and taskiq: sync functions, which errors are
retried, jittered retry delays, validated and richly typed arguments."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import threading
import uuid
from decimal import Decimal

import pytest

import jsflow
from jsflow.tasks.function import TaskOptions


def _app(client: jsflow.Client) -> jsflow.App:
    return jsflow.App(client, f"opt{uuid.uuid4().hex[:6]}")


async def test_a_sync_task_runs_in_a_worker_thread(jsflow_client: jsflow.Client) -> None:
    app = _app(jsflow_client)
    main = threading.get_ident()

    @app.task
    def crunch(n: int) -> int:
        assert threading.get_ident() != main  # not on the event loop's thread
        return sum(range(n))

    async with asyncio.timeout(20), app.worker():
        assert await (await crunch.submit(10)).result(timeout=15) == 45


async def test_only_errors_named_in_retry_on_are_retried(jsflow_client: jsflow.Client) -> None:
    app = _app(jsflow_client)
    calls = {"flaky": 0, "charge": 0}

    @app.task(retries=3, backoff=0.05, retry_on=(ConnectionError,))
    async def flaky() -> str:
        calls["flaky"] += 1
        if calls["flaky"] < 3:
            raise ConnectionError("try again")
        return "ok"

    @app.task(retries=3, backoff=0.05, dont_retry_on=(ValueError,))
    async def charge() -> str:
        calls["charge"] += 1
        raise ValueError("card declined")  # retrying would charge again: never

    async with asyncio.timeout(30), app.worker():
        assert await (await flaky.submit()).result(timeout=20) == "ok"
        with pytest.raises(jsflow.TaskFailedError, match="card declined"):
            await (await charge.submit()).result(timeout=20)
    assert calls == {"flaky": 3, "charge": 1}


def test_jittered_retry_delays_stay_within_their_bounds() -> None:
    options = TaskOptions(name="t", backoff=1.0, max_backoff=8.0, jitter=0.5)
    for attempt, ceiling in ((1, 1.0), (2, 2.0), (3, 4.0), (5, 8.0)):
        delays = {options.retry_delay(attempt) for _ in range(50)}
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(delays) > 1  # jittered


@pytest.mark.parametrize(
    "bad",
    [{"jitter": 2}, {"retry_on": ValueError}, {"dont_retry_on": ("x",)}],
)
def test_bad_retry_options_are_config_errors(bad: dict[str, object]) -> None:
    with pytest.raises(jsflow.ConfigError):
        TaskOptions(name="t", **bad)  # type: ignore[arg-type]


@dataclasses.dataclass
class Line:
    sku: str
    price: Decimal
    at: dt.datetime


async def test_rich_arguments_and_results_round_trip_and_are_validated(
    jsflow_client: jsflow.Client,
) -> None:
    app = _app(jsflow_client)

    @app.task
    async def total(lines: list[Line]) -> Decimal:
        assert all(isinstance(line.at, dt.datetime) for line in lines)
        return sum((line.price for line in lines), Decimal(0))

    now = dt.datetime.now(dt.UTC)
    async with asyncio.timeout(20), app.worker():
        handle = await total.submit([Line("a", Decimal("1.10"), now), Line("b", Decimal("2"), now)])
        assert await handle.result(timeout=15) == Decimal("3.10")
        with pytest.raises(jsflow.CodecError, match=r"argument 'lines': \[0\]: expected Line"):
            await total.submit([{"sku": "a", "price": 1, "at": now}])
        with pytest.raises(jsflow.CodecError, match=r"\[0\]\.price: expected a decimal"):
            await total.submit([Line("a", 1, now)])  # type: ignore[arg-type]


def test_an_annotation_no_codec_carries_fails_at_decoration() -> None:
    app = jsflow.App(None, "decorate")
    with pytest.raises(jsflow.ConfigError, match="complex"):

        @app.task
        async def bad(x: complex) -> None:
            return None


async def test_a_chord_callback_gets_the_results_of_its_group(
    jsflow_client: jsflow.Client,
) -> None:
    app = _app(jsflow_client)

    @app.task
    async def square(n: int) -> int:
        return n * n

    @app.task
    async def total(label: str) -> str:
        parts = await jsflow.current_task().dependency_results()
        return f"{label}: {sum(parts)} from {parts}"

    async with asyncio.timeout(30), app.worker():
        group = await square.submit_many([(1,), (2,), ((3,), {})])
        assert [await h.result(timeout=15) for h in group] == [1, 4, 9]
        chord = await total.submit("squares", depends_on=group)
        assert await chord.result(timeout=15) == "squares: 14 from [1, 4, 9]"


async def test_a_group_with_one_bad_call_queues_nothing(jsflow_client: jsflow.Client) -> None:
    app = _app(jsflow_client)

    @app.task
    async def square(n: int) -> int:
        return n * n

    with pytest.raises(jsflow.CodecError, match="argument 'n'"):
        await square.submit_many([(1,), ("two",)])
    with pytest.raises(jsflow.ConfigError, match="not opened"):
        app.opened_backend()  # checked before any I/O: the app never even opened
