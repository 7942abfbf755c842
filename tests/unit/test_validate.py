"""The one validator: names, ids, subjects and option values (pure, no server)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

import jsflow
from jsflow import _validate as v
from jsflow.keys import validate_key


@given(st.text(max_size=3000))
def test_any_remote_id_becomes_a_legal_bounded_key_token(raw: str) -> None:
    token = v.id_key(raw)
    assert len(token) <= 200
    assert "." not in token
    validate_key(token)


@given(st.text(min_size=1, max_size=50), st.text(min_size=1, max_size=50))
def test_distinct_remote_ids_get_distinct_tokens(a: str, b: str) -> None:
    if a != b:
        assert v.id_key(a) != v.id_key(b)


def test_plain_short_ids_stay_readable() -> None:
    assert v.id_key("order-42_a") == "order-42_a"
    assert v.id_key("a" * 5000).startswith("h-")


@pytest.mark.parametrize("bad", ["", "a b", "a.b", "x" * 129, 5, None, "ä", "a\n"])
def test_bad_names_are_refused_with_a_typed_error(bad: object) -> None:
    with pytest.raises(jsflow.InvalidNameError) as info:
        v.check_name("stream name", bad)
    assert "stream name" in str(info.value)
    assert len(str(info.value)) < 300


@pytest.mark.parametrize("bad", ["", "a b", "a..b", ".a", "a.", "i" * 1025, "a\x00", "a\n"])
def test_bad_ids_are_refused(bad: str) -> None:
    with pytest.raises(jsflow.InvalidNameError):
        v.check_id("task id", bad)


@pytest.mark.parametrize(
    "bad", ["dl q", "dlq.*", "dlq.>", "a..b", "", "a.\tb", "x" * 3000, "dlq\n", "a.b\n"]
)
def test_subjects_without_wildcards(bad: str) -> None:
    with pytest.raises(jsflow.InvalidNameError):
        v.check_subject("dead-letter subject", bad)


def test_subjects_with_wildcards() -> None:
    assert v.check_subject("filter", "orders.*.>", wildcards=True)
    with pytest.raises(jsflow.InvalidNameError):
        v.check_subject("filter", "orders.>.x", wildcards=True)
    with pytest.raises(jsflow.InvalidNameError):
        v.check_subject("filter", "orders.a*", wildcards=True)


@pytest.mark.parametrize("bad", ["5", None, True, math.nan, math.inf, -1, 0, 1e20])
def test_durations_are_finite_positive_numbers(bad: object) -> None:
    with pytest.raises(jsflow.ConfigError) as info:
        v.duration("ack_wait", bad)
    assert "ack_wait" in str(info.value)


@pytest.mark.parametrize("bad", ["3", 3.0, True, 0, -1, 2**70])
def test_counts_are_ints_in_range(bad: object) -> None:
    with pytest.raises(jsflow.ConfigError) as info:
        v.count("retries", bad, minimum=1, maximum=1000)
    assert "retries" in str(info.value)


def test_good_values_pass_through() -> None:
    assert v.duration("ttl", 1.5) == 1.5
    assert v.count("n", 3) == 3
    assert v.optional_duration("t", None) is None
    assert v.check_name("bucket", "orders_v1") == "orders_v1"
    assert v.check_id("task id", "a.b/c=d") == "a.b/c=d"
