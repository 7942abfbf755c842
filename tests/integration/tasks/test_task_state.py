"""Property tests: payload round trips, rule matching, slot accounting, single completion."""

from __future__ import annotations

import asyncio
import re
import uuid
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import jsflow
from jsflow.tasks.app import App, TaskOptions
from jsflow.tasks.calls import CallCodec
from jsflow.tasks.lifecycle import Declined, new_state, set_status, status_of
from jsflow.tasks.router import Rule
from jsflow.tasks.status import TaskStatus
from jsflow.tasks.worker import _Slots

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=10,
)


async def _sample(a: Any, b: Any = None, *rest: Any, **extra: Any) -> Any:
    return a


@given(
    args=st.lists(json_values, min_size=1, max_size=4),
    extra=st.dictionaries(
        st.from_regex(r"[a-z]{3,6}", fullmatch=True).filter(lambda k: k not in ("a", "b")),
        json_values,
        max_size=3,
    ),
)
def test_call_codec_round_trips_json_arguments(args: list[Any], extra: dict[str, Any]) -> None:
    # given any JSON arguments, when encoded and decoded, then they are unchanged
    codec = CallCodec(_sample)
    assert codec.decode_args(codec.encode_args(tuple(args), extra)) == (tuple(args), extra)


tokens = st.sampled_from(["a", "b", "c"])


@given(
    pattern=st.lists(st.sampled_from(["a", "b", "*"]), min_size=1, max_size=3).map(".".join)
    | st.lists(tokens, max_size=2).map(lambda p: ".".join([*p, ">"])),
    subject=st.lists(tokens, min_size=1, max_size=4).map(".".join),
)
def test_rule_matching_agrees_with_a_regex_model(pattern: str, subject: str) -> None:
    # given a NATS pattern, then Rule.matches agrees with a regex translation of it
    parts = {"*": "[^.]+", ">": ".+"}
    regex = "^" + r"\.".join(parts.get(t, re.escape(t)) for t in pattern.split(".")) + "$"
    assert Rule(pattern).matches(subject) == bool(re.match(regex, subject))


@given(attempt=st.integers(1, 40), backoff=st.floats(0, 5), extra=st.floats(0, 100))
def test_retry_delay_grows_and_is_bounded(attempt: int, backoff: float, extra: float) -> None:
    # given options, then delays never shrink with attempts and never exceed max_backoff
    opts = TaskOptions(name="x", backoff=backoff, max_backoff=backoff + extra)
    assert opts.retry_delay(attempt) <= opts.max_backoff
    assert opts.retry_delay(attempt) <= opts.retry_delay(attempt + 1)


@given(ops=st.lists(st.integers(1, 8), max_size=30), size=st.integers(1, 8))
@pytest.mark.asyncio(loop_scope="session")
async def test_slots_never_hand_out_more_than_their_size(ops: list[int], size: int) -> None:
    # given a slot pool, when slots are taken and given back, then free stays in [0, size]
    slots = _Slots(size)
    held: list[int] = []
    for want in ops:
        if slots.free == 0:
            slots.give(held.pop())
        got = await slots.take(want)
        assert 1 <= got <= want and 0 <= slots.free <= size
        held.append(got)
    assert slots.free + sum(held) == size


@pytest.mark.asyncio(loop_scope="session")
@settings(max_examples=6)
@given(racers=st.integers(2, 6))
async def test_concurrent_finishers_of_one_attempt_have_exactly_one_winner(
    jsflow_client: jsflow.Client, racers: int
) -> None:
    # given a RUNNING task attempt and several clients racing to complete it
    app = App(jsflow_client, "t")
    backend = await app.backend()
    task_id = uuid.uuid4().hex
    state = new_state(task_id, "race", b"")
    set_status(state, TaskStatus.RUNNING)
    state.attempt = 1
    await backend.store.create(state)
    clients = [
        await jsflow.connect(jsflow_client.nc.connected_url.geturl())  # type: ignore[union-attr]
        for _ in range(racers)
    ]
    try:
        stores = [(await App(c, "t").backend()).store for c in clients]

        def finish(s: Any) -> None:
            if status_of(s) is not TaskStatus.RUNNING or s.attempt != 1:
                raise Declined
            set_status(s, TaskStatus.SUCCEEDED)

        # when they all compare-and-set at once
        outcomes = await asyncio.gather(*(st_.transition(task_id, finish) for st_ in stores))
    finally:
        for c in clients:
            await c.close()
    # then exactly one transition won
    assert sum(o is not None for o in outcomes) == 1
