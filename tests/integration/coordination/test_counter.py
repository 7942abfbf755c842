"""Counter: native server counters and the compare-and-set fallback, on a real server."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import jsflow
from tests.support.names import uniq

MODES = [pytest.param(True, id="native"), pytest.param(False, id="cas")]


@pytest.mark.parametrize("native", MODES)
async def test_add_returns_the_new_value_and_get_reads_it(
    jsflow_client: jsflow.Client, native: bool
) -> None:
    # given a fresh counter
    counter = jsflow_client.counter(uniq("c"), native=native)
    # then an untouched key reads 0
    assert await counter.get("hits") == 0
    # when adding
    assert await counter.add("hits") == 1
    assert await counter.add("hits", 41) == 42
    # then get sees the total, and the mode is the one asked for
    assert await counter.get("hits") == 42
    assert counter.native is native


@pytest.mark.parametrize("native", MODES)
async def test_negative_n_decrements_below_zero(jsflow_client: jsflow.Client, native: bool) -> None:
    counter = jsflow_client.counter(uniq("c"), native=native)
    # when taking away more than was added
    await counter.add("stock", 3)
    assert await counter.add("stock", -5) == -2
    # then the value goes negative, and adding 0 reads it back
    assert await counter.add("stock", 0) == -2
    assert await counter.get("stock") == -2


@pytest.mark.parametrize("native", MODES)
async def test_concurrent_adds_from_several_clients_sum_exactly(
    jsflow_server: jsflow.EmbeddedServer, native: bool
) -> None:
    # given three clients sharing a counter
    name = uniq("c")
    clients = [await jsflow.connect(jsflow_server.url) for _ in range(3)]
    try:
        counters = [c.counter(name, native=native) for c in clients]
        # when each adds 1 concurrently, 40 times per client
        results = await asyncio.gather(
            *(counter.add("total") for counter in counters for _ in range(40))
        )
        # then no add is lost, and each add saw its own distinct total
        assert sorted(results) == list(range(1, 121))
        assert await counters[0].get("total") == 120
        # and concurrent decrements are exact too
        await asyncio.gather(*(counter.add("total", -2) for counter in counters for _ in range(10)))
        assert await counters[1].get("total") == 60
    finally:
        for c in clients:
            await c.close()


@settings(max_examples=20)
@given(deltas=st.lists(st.integers(-(10**6), 10**6), max_size=15))
async def test_counter_matches_the_sum_of_its_adds(
    jsflow_client: jsflow.Client, deltas: list[int]
) -> None:
    # given any sequence of adds on a fresh key of a native and a cas counter
    native = jsflow_client.counter("prop_native", native=True)
    cas = jsflow_client.counter("prop_cas", native=False)
    key = uuid.uuid4().hex
    expected = 0
    for n in deltas:
        expected += n
        # then each add returns the running sum, in both modes
        assert await native.add(key, n) == expected
        assert await cas.add(key, n) == expected
    assert await native.get(key) == await cas.get(key) == expected


async def test_native_counters_hold_values_beyond_64_bits(jsflow_client: jsflow.Client) -> None:
    counter = jsflow_client.counter(uniq("c"), native=True)
    huge = 2**70
    assert await counter.add("big", huge) == huge
    assert await counter.add("big", huge) == 2 * huge


async def test_cas_counter_refuses_int64_overflow(jsflow_client: jsflow.Client) -> None:
    counter = jsflow_client.counter(uniq("c"), native=False)
    await counter.add("big", 2**63 - 1)
    with pytest.raises(jsflow.ConfigError, match="overflow"):
        await counter.add("big", 1)
    assert await counter.get("big") == 2**63 - 1


@pytest.mark.parametrize("native", MODES)
async def test_reset_sets_a_key_back_to_zero(jsflow_client: jsflow.Client, native: bool) -> None:
    counter = jsflow_client.counter(uniq("c"), native=native)
    await counter.add("a", 5)
    await counter.add("b", 7)
    # when one key is reset
    await counter.reset("a")
    # then it reads 0 and counts from 0 again; other keys are untouched
    assert await counter.get("a") == 0
    assert await counter.add("a") == 1
    assert await counter.get("b") == 7


async def test_default_mode_uses_native_counters_on_this_server(
    jsflow_client: jsflow.Client,
) -> None:
    counter = jsflow_client.counter(uniq("c"))
    assert counter.native is None
    await counter.add("k")
    assert counter.native is True
    info = await jsflow_client.js.stream_info(counter.stream)
    assert info.config.allow_msg_counter


async def test_counters_of_one_name_are_shared_across_instances(
    jsflow_client: jsflow.Client,
) -> None:
    name = uniq("c")
    await jsflow_client.counter(name).add("k", 2)
    assert await jsflow_client.counter(name).add("k", 3) == 5


async def test_bad_input_raises_before_any_io(jsflow_server: jsflow.EmbeddedServer) -> None:
    # given a client that is already closed (any I/O would fail differently)
    client = await jsflow.connect(jsflow_server.url)
    await client.close()
    for name in ("", "a.b", "with space", "star*"):
        with pytest.raises(jsflow.ConfigError):
            client.counter(name)
    with pytest.raises(jsflow.ConfigError):
        client.counter("ok", native="yes")
    with pytest.raises(jsflow.ConfigError):
        client.counter("ok", replicas=7)
    counter = client.counter("ok")
    # then bad keys and amounts are typed errors, not connection errors
    with pytest.raises(jsflow.InvalidKeyError):
        await counter.add("a.>")
    with pytest.raises(jsflow.InvalidKeyError):
        await counter.get("")
    with pytest.raises(jsflow.ConfigError):
        await counter.add("k", 1.5)  # type: ignore[arg-type]
    with pytest.raises(jsflow.ConfigError):
        await counter.add("k", True)
