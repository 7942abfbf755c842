"""Stages and middleware on messages, without a flow or a server: a stage result filters,
passes on or fans out; Timeout, Retry, Logging and Metrics each wrap a stage as documented
(in flows on a real server: integration/flow/test_flow_middleware.py)."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jsflow.flow.errors import StageTimeoutError
from jsflow.flow.handler import as_stage_fn, outputs_of
from jsflow.flow.message import Message
from jsflow.flow.metrics import FlowMetrics
from jsflow.flow.middleware import Logging, Metrics, Retry, Timeout
from tests.support.streams import message


@given(st.one_of(st.none(), st.integers(), st.lists(st.integers(), max_size=5)))
def test_outputs_of_filters_passes_or_fans_out(result):
    # given any stage result, when turned into outputs
    msg = Message(data=0, subject="s", id="x")
    outs = outputs_of(msg, result)
    # then None filters, a list fans out in order, a value passes on, ids are kept
    expected = [] if result is None else result if isinstance(result, list) else [result]
    assert [o.data for o in outs] == expected
    assert all(o.id == "x" for o in outs)


async def test_timeout_fails_a_slow_stage():
    # given a stage slower than its timeout
    async def slow(msg):
        await asyncio.sleep(5)

    stage = Timeout(0.05)(as_stage_fn(slow))
    # when it runs, then it fails with StageTimeoutError naming the stage
    with pytest.raises(StageTimeoutError) as info:
        await stage(message())
    assert info.value.stage == "slow"


async def test_retry_reruns_in_place_then_gives_up():
    # given a stage failing twice, then succeeding
    calls = []

    async def flaky(msg):
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError("transient")
        return "ok"

    assert await Retry(max_retries=2, initial_interval=0.001)(as_stage_fn(flaky))(message()) == "ok"
    # when retries are fewer than failures, then the last error is raised
    calls.clear()
    with pytest.raises(ConnectionError):
        await Retry(max_retries=1, initial_interval=0.001)(as_stage_fn(flaky))(message())
    assert len(calls) == 2


async def test_retry_only_retries_listed_errors():
    calls = []

    async def bad(msg):
        calls.append(1)
        raise KeyError("not retryable")

    with pytest.raises(KeyError):
        await Retry(max_retries=3, initial_interval=0.001, retry_on=(OSError,))(as_stage_fn(bad))(
            message()
        )
    assert len(calls) == 1


async def test_logging_binds_correlation_id(caplog):
    # given a logged stage
    async def fine(msg):
        return msg.data

    caplog.set_level(logging.DEBUG, logger="jsflow.flow")
    # when it runs, then its log line names stage and correlation id
    await Logging()(as_stage_fn(fine))(message())
    assert any(
        "flow.stage.done" in r.getMessage() and "correlation_id='c-1'" in r.getMessage()
        for r in caplog.records
    )


async def test_metrics_record_calls_failures_and_latency():
    # given a metrics-wrapped stage that fails on odd data
    metrics = FlowMetrics()

    async def even_only(msg):
        if msg.data % 2:
            raise ValueError("odd")
        return msg.data

    stage = Metrics(metrics)(as_stage_fn(even_only))
    for n in range(4):
        with contextlib.suppress(ValueError):
            await stage(message(n))
    # then the snapshot has the counts and latency observations
    snap = metrics.snapshot().stages["even_only"]
    assert (snap.calls, snap.failed, snap.latency.count) == (4, 2, 4)
