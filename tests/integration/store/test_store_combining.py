"""Concurrent updates: in-process combining keeps each caller's result; retries are bounded."""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections.abc import Callable, Iterator

import nats
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import jsflow
from tests.support.names import second_client

_keys = itertools.count()

# ("add", n) adds, ("mul", n) multiplies, ("raise", n) raises ValueError(n) deterministically.
_OPS = st.lists(
    st.tuples(st.sampled_from(["add", "mul", "raise"]), st.integers(min_value=-3, max_value=5)),
    min_size=1,
    max_size=25,
)


def _fn(kind: str, n: int) -> Callable[[int], int]:
    def apply(state: int) -> int:
        if kind == "add":
            return state + n
        if kind == "mul":
            return state * n
        raise ValueError(n)

    return apply


@settings(max_examples=40)
@given(ops=_OPS)
async def test_combined_updates_match_in_order_application(
    jsflow_client: jsflow.Client, ops: list[tuple[str, int]]
) -> None:
    # given a key and a random list of fns, some of which raise
    store = await jsflow_client.object_store("combining", int)
    key = f"k{next(_keys)}"
    # when they are all submitted at once
    results = await asyncio.gather(
        *(store.update(key, _fn(kind, n)) for kind, n in ops), return_exceptions=True
    )
    # then each caller got the state after its own fn, in submission order
    expected = 0
    for (kind, n), result in zip(ops, results, strict=True):
        if kind == "raise":
            assert isinstance(result, ValueError) and result.args == (n,)
            continue
        expected = _fn(kind, n)(expected)
        assert isinstance(result, jsflow.Entry), result
        assert result.value == expected
    # and the stored value is the in-order application of the non-raising fns
    got = await store.get(key)
    if all(kind == "raise" for kind, _ in ops):
        assert got is None
    else:
        assert got is not None and got.value == expected


async def test_concurrent_updates_in_one_process_do_not_conflict(
    jsflow_client: jsflow.Client, jsflow_bucket: str
) -> None:
    # given a store on a fresh connection (nothing cached)
    async with await second_client(jsflow_client) as client:
        store = await client.object_store(jsflow_bucket, int, retry=jsflow.RetryPolicy(attempts=1))
        before = client.nc.stats["out_msgs"]
        # when 300 increments of one key run concurrently (no retry allowed)
        entries = await asyncio.gather(*(store.update("hot", lambda n: n + 1) for _ in range(300)))
        round_trips = client.nc.stats["out_msgs"] - before
    # then none conflicted, every caller saw a distinct count, and few messages were sent
    assert sorted(e.value for e in entries) == list(range(1, 301))
    got = await (await jsflow_client.object_store(jsflow_bucket, int)).get("hot")
    assert got is not None and got.value == 300
    assert round_trips <= 10


async def test_sequential_uncontended_update_costs_one_round_trip(
    jsflow_client: jsflow.Client, jsflow_bucket: str
) -> None:
    store = await jsflow_client.object_store(jsflow_bucket, int)
    await store.update("k", lambda n: n + 1)
    before = jsflow_client.nc.stats["out_msgs"]
    for _ in range(5):
        await store.update("k", lambda n: n + 1)
    assert jsflow_client.nc.stats["out_msgs"] - before == 5


async def test_two_clients_updating_one_key_lose_nothing(
    jsflow_client: jsflow.Client, jsflow_bucket: str
) -> None:
    # given two independent clients (two processes' worth of stores)
    async with await second_client(jsflow_client) as a, await second_client(jsflow_client) as b:
        sa = await a.object_store(jsflow_bucket, int)
        sb = await b.object_store(jsflow_bucket, int)

        async def bump(store: jsflow.ObjectStore[int], times: int) -> None:
            for _ in range(times):
                await store.update("k", lambda n: n + 1)

        # when both increment concurrently, each one at a time
        await asyncio.gather(bump(sa, 60), bump(sb, 60))
        # then every increment is there
        got = await sa.get("k")
        assert got is not None and got.value == 120


class _RawWriter:
    """A second event loop in a thread with its own nats-py connection, writing raw KV puts."""

    def __init__(self, url: str) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._nc = self._call(nats.connect(url))
        self.writes = 0

    def _call(self, coro):  # type: ignore[no-untyped-def]
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=10)

    def put(self, subject: str, data: bytes) -> None:
        """Publish to the KV subject and wait for the server's ack (blocks the caller)."""
        self._call(self._nc.jetstream().publish(subject, data))
        self.writes += 1

    def close(self) -> None:
        self._call(self._nc.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()


@pytest.fixture
def raw_writer(jsflow_server: jsflow.EmbeddedServer) -> Iterator[_RawWriter]:
    writer = _RawWriter(jsflow_server.url)
    yield writer
    writer.close()


async def test_endless_conflict_gives_up_after_bounded_attempts(
    jsflow_client: jsflow.Client, jsflow_bucket: str, raw_writer: _RawWriter
) -> None:
    # given a store allowing 5 attempts, and a competitor that rewrites the key every time
    # the update fn runs (so every compare-and-set is stale)
    store = await jsflow_client.object_store(
        jsflow_bucket, int, retry=jsflow.RetryPolicy(attempts=5, deadline=30.0)
    )
    await store.put("k", 0)
    calls = 0

    def contended(n: int) -> int:
        nonlocal calls
        calls += 1
        raw_writer.put(f"$KV.{jsflow_bucket}.k", str(1000 + calls).encode())
        return n + 1

    # when updated / then ConflictError after exactly five attempts
    with pytest.raises(jsflow.ConflictError) as info:
        await store.update("k", contended)
    assert info.value.attempts == 5
    assert calls == 5 == raw_writer.writes
    assert info.value.key == "k" and info.value.bucket == jsflow_bucket
    # and the competitor's last write stands
    got = await store.get("k")
    assert got is not None and got.value == 1005


async def test_endless_conflict_stops_at_the_deadline(
    jsflow_client: jsflow.Client, jsflow_bucket: str, raw_writer: _RawWriter
) -> None:
    # given a huge attempt budget but a short deadline and large backoff
    policy = jsflow.RetryPolicy(attempts=1000, deadline=0.5, initial_backoff=0.05, max_backoff=0.1)
    store = await jsflow_client.object_store(jsflow_bucket, int, retry=policy)

    def contended(n: int) -> int:
        raw_writer.put(f"$KV.{jsflow_bucket}.k", b"7")
        return n + 1

    with pytest.raises(jsflow.ConflictError) as info:
        await store.update("k", contended)
    assert 1 <= info.value.attempts < 1000


class StoreMachine(RuleBasedStateMachine):
    """ObjectStore operations against a dict model of the bucket."""

    url = ""

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.client = self.run(jsflow.connect(self.url))
        self.bucket = f"stateful_{next(_keys)}"
        self.store: jsflow.ObjectStore[int] = self.run(
            self.client.object_store(self.bucket, int, history=3)
        )
        self.model: dict[str, int] = {}
        self.revisions: dict[str, int] = {}

    def run(self, coro):  # type: ignore[no-untyped-def]
        return self.loop.run_until_complete(asyncio.wait_for(coro, 10))

    keys = st.sampled_from(["a", "b", "c.d"])

    @rule(key=keys, value=st.integers(-100, 100))
    def put(self, key: str, value: int) -> None:
        self.revisions[key] = self.run(self.store.put(key, value)).revision
        self.model[key] = value

    @rule(key=keys, value=st.integers(-100, 100))
    def create(self, key: str, value: int) -> None:
        try:
            self.revisions[key] = self.run(self.store.create(key, value)).revision
        except jsflow.KeyExistsError:
            assert key in self.model
        else:
            assert key not in self.model
            self.model[key] = value

    @rule(key=keys, n=st.integers(-5, 5), times=st.integers(1, 4))
    def update(self, key: str, n: int, times: int) -> None:
        async def many() -> list[jsflow.Entry[int]]:
            return await asyncio.gather(
                *(self.store.update(key, lambda v: v + n) for _ in range(times))
            )

        entries = self.run(many())
        self.model[key] = self.model.get(key, 0) + n * times
        assert entries[-1].value == self.model[key]
        self.revisions[key] = entries[-1].revision

    @precondition(lambda self: bool(self.revisions))
    @rule(data=st.data(), stale=st.booleans())
    def compare_and_set(self, data: st.DataObject, stale: bool) -> None:
        key = data.draw(st.sampled_from(sorted(self.revisions)))
        revision = self.revisions[key] - (1 if stale else 0)
        try:
            self.revisions[key] = self.run(self.store.compare_and_set(key, 1, revision)).revision
        except jsflow.ConflictError:
            assert stale
        else:
            assert not stale
            self.model[key] = 1

    @rule(key=keys)
    def delete(self, key: str) -> None:
        self.run(self.store.delete(key))
        self.model.pop(key, None)
        self.revisions.pop(key, None)

    @invariant()
    def matches_model(self) -> None:
        for key in ("a", "b", "c.d"):
            got = self.run(self.store.get(key))
            assert (got.value if got else None) == self.model.get(key)
        assert self.run(self.store.keys()) == sorted(self.model)

    def teardown(self) -> None:
        self.run(self.client.js.delete_key_value(self.bucket))
        self.run(self.client.close())
        self.loop.close()


def test_store_behaves_like_a_dict(jsflow_server: jsflow.EmbeddedServer) -> None:
    # given the session server / when random operation sequences run / then the model holds
    StoreMachine.url = jsflow_server.url
    state_test = StoreMachine.TestCase
    state_test.settings = settings(max_examples=15, stateful_step_count=15, deadline=None)
    state_test().runTest()
