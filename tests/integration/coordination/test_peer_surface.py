"""What users of redis-py's Lock and the limits library expect: a lock that times out
in ``async with``, who holds a lock from the server's view, lock names on errors, rates
written as people write them, dotted limiter names, and a hint for Redis-style keys."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid

import pytest

import jsflow
from jsflow.coordination.rates import parse_rate


@dataclasses.dataclass
class Reading:
    sensor: str = ""
    value: float = 0.0


def uniq(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def test_async_with_a_lock_gives_up_after_its_blocking_timeout(
    jsflow_client: jsflow.Client,
) -> None:
    name = uniq("busy")
    async with asyncio.timeout(15), jsflow_client.lock(name, ttl=5) as first:
        assert await first.current_owner() == first.owner
        waiter = jsflow_client.lock(name, ttl=5, blocking_timeout=0.3)
        with pytest.raises(jsflow.LockTimeoutError) as caught:
            async with waiter:
                raise AssertionError("must not be entered")
        assert caught.value.name == name
        assert isinstance(caught.value, TimeoutError)
    assert await waiter.current_owner() is None  # released: free from every process's view


async def test_release_of_an_unheld_lock_names_it(jsflow_client: jsflow.Client) -> None:
    name = uniq("never")
    with pytest.raises(jsflow.NotHeldError) as caught:
        await jsflow_client.lock(name).release()
    assert caught.value.name == name


async def test_semaphore_holders_are_visible_from_the_server(jsflow_client: jsflow.Client) -> None:
    name = uniq("pool")
    async with asyncio.timeout(15):
        a = jsflow_client.semaphore(name, 2, owner="a")
        b = jsflow_client.semaphore(name, 2, owner="b")
        async with a, b:
            assert sorted(await a.holders()) == ["a", "b"]
        assert await a.holders() == []


@pytest.mark.parametrize(
    ("text", "rate", "per"),
    [
        ("10/s", 10, 1),
        ("10/second", 10, 1),
        ("100 per minute", 100, 60),
        ("5/h", 5, 3600),
        ("30/10s", 30, 10),
        ("2 per day", 2, 86400),
        ((3, 2), 3, 2),
        (7, 7, 1),
    ],
)
def test_rates_are_read_the_way_people_write_them(text: object, rate: float, per: float) -> None:
    assert parse_rate(text) == (rate, per)


@pytest.mark.parametrize("bad", ["10", "ten/s", "10/fortnight", "-1/s", "0/s", (1,), None])
def test_a_bad_rate_is_a_config_error(bad: object) -> None:
    with pytest.raises(jsflow.ConfigError, match="rate"):
        parse_rate(bad)


async def test_the_limiter_and_tasks_take_the_same_rate_strings(
    jsflow_client: jsflow.Client,
) -> None:
    limiter = jsflow_client.rate_limiter(uniq("api.partner"), "2 per minute")
    assert (limiter.rate, limiter.per) == (2, 60)
    app = jsflow.App(jsflow_client, uniq("rates"))

    @app.task(rate_limit="100 per minute")
    async def call() -> None:
        return None

    assert call.options.rate_limit == (100, 60)


async def test_dotted_limiter_names_never_share_state_with_other_limiters(
    jsflow_client: jsflow.Client,
) -> None:
    base = uniq("api")
    async with asyncio.timeout(15):
        dotted = jsflow_client.rate_limiter(f"{base}.partner", 1, per=60)
        plain = jsflow_client.rate_limiter(base, 1, per=60)
        # "<base>.partner" limiting "x" and "<base>" limiting "partner.x" are different
        assert (await dotted.try_acquire("x")).allowed
        assert (await plain.try_acquire("partner.x")).allowed
        assert not (await dotted.try_acquire("x")).allowed


def test_a_redis_style_key_points_to_jsflow_key() -> None:
    with pytest.raises(jsflow.InvalidKeyError, match=r"jsflow\.key\('user', '42'\)"):
        jsflow.validate_key("user:42")


async def test_a_typed_publish_feeds_a_declared_flow_before_it_first_runs(
    jsflow_client: jsflow.Client,
) -> None:
    name = uniq("typed").replace("-", "_")
    seen: list[Reading] = []

    async def record(msg: jsflow.Message[Reading]) -> None:
        seen.append(msg.data)

    flow = jsflow.FlowHandler(
        jsflow_client,
        source=jsflow.StreamSource(f"S_{name}", f"readings.{name}", f"d_{name}", Reading),
        stages=[record],
    )
    async with asyncio.timeout(20):
        with pytest.raises(jsflow.NoStreamError):
            await jsflow_client.publish(f"readings.{name}", Reading("t1", 1.0))
        await flow.declare()
        first = await jsflow_client.publish(f"readings.{name}", Reading("t1", 21.5), msg_id="r1")
        again = await jsflow_client.publish(f"readings.{name}", Reading("t1", 21.5), msg_id="r1")
        assert first == again  # a retried publish is stored once
        async with flow:
            while not seen:
                await asyncio.sleep(0.05)
    assert seen == [Reading("t1", 21.5)]


async def test_peek_says_whether_a_request_would_pass_without_taking_it(
    jsflow_client: jsflow.Client,
) -> None:
    limiter = jsflow_client.rate_limiter(uniq("peek"), 2, per=60, burst=2)
    async with asyncio.timeout(15):
        first = await limiter.peek("k")
        assert first.allowed and first.remaining == 1  # one more after this one
        for _ in range(5):
            assert (await limiter.peek("k")).allowed  # peeking takes nothing
        assert (await limiter.try_acquire("k")).allowed
        assert (await limiter.try_acquire("k")).allowed
        denied = await limiter.peek("k")
        assert not denied.allowed and 0 < denied.retry_after <= 30
        assert not (await limiter.try_acquire("k")).allowed
