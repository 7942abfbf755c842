"""Several key filters at once (nats.go's WatchFiltered and ListKeysFiltered): keys(),
entries() and watch() take one pattern or a list; a list is read by one consumer with the
server's multi-subject filter, lists exactly the union of what each pattern lists, and
combines with every watch option; bad lists fail before any I/O."""

from __future__ import annotations

import asyncio
import itertools
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import jsflow
from tests.support.names import second_client
from tests.support.watch import consumer_count, next_change, take

_TOKENS = ("a", "b", "c")
# Every key of one to three tokens: the fixed contents of the property test's bucket.
_UNIVERSE = [".".join(t) for n in (1, 2, 3) for t in itertools.product(_TOKENS, repeat=n)]
_DELETED = {k for k in _UNIVERSE if k.endswith(".c")}
_PROPERTY_BUCKET = f"filters_{uuid.uuid4().hex[:8]}"

_pattern = st.lists(st.sampled_from(("a", "b", "*")), min_size=1, max_size=3).flatmap(
    lambda tokens: st.sampled_from((".".join(tokens), ".".join([*tokens, ">"])))
)


def _matches(pattern: str, subject: str) -> bool:
    want, got = pattern.split("."), subject.split(".")
    for i, token in enumerate(want):
        if token == ">":
            return len(got) > i
        if i >= len(got) or token not in ("*", got[i]):
            return False
    return len(want) == len(got)


async def _populated(client: jsflow.Client) -> jsflow.ObjectStore[int]:
    store = await client.object_store(_PROPERTY_BUCKET, int)
    if not await store.keys():
        await asyncio.gather(*(store.put(k, i) for i, k in enumerate(_UNIVERSE)))
        await asyncio.gather(*(store.delete(k) for k in _DELETED))
    return store


@settings(max_examples=60)
@given(patterns=st.lists(_pattern, min_size=1, max_size=4))
async def test_keys_of_several_filters_are_the_union_of_each(
    jsflow_client: jsflow.Client, patterns: list[str]
) -> None:
    # given a bucket of every key of up to three tokens (some deleted)
    store = await _populated(jsflow_client)
    # when it lists the keys of several patterns (overlapping, covering one another or not)
    got = await store.keys(patterns)
    # then they are the union of the keys of each pattern, sorted, each once
    union = set().union(*[set(await store.keys(p)) for p in patterns])
    assert got == sorted(union)
    assert got == sorted(
        k for k in _UNIVERSE if k not in _DELETED and any(_matches(p, k) for p in patterns)
    )
    entries = await store.entries(patterns)
    assert sorted(e.key for e in entries) == got


async def test_keys_and_entries_take_a_list_of_patterns(
    jsflow_client: jsflow.Client, jsflow_bucket: str
) -> None:
    store = await jsflow_client.object_store(jsflow_bucket, int)
    for i, k in enumerate(["a.1", "a.2", "b.1", "b.x.deep", "c.1", "gone.1"]):
        await store.put(k, i)
    await store.delete("gone.1")
    assert await store.keys(["a.*", "b.>"]) == ["a.1", "a.2", "b.1", "b.x.deep"]
    # duplicates and a pattern another covers change nothing; a tuple works as a list
    assert await store.keys(("c.1", "a.>", "a.1", "c.1")) == ["a.1", "a.2", "c.1"]
    assert await store.keys(["gone.*", "c.1"]) == ["c.1"]
    assert await store.keys(["zzz", "yyy.>"]) == []
    assert [(e.key, e.value) for e in await store.entries(["c.1", "a.2"])] == [
        ("a.2", 1),
        ("c.1", 4),
    ]
    # one pattern, alone or in a list, behaves as before
    assert await store.keys("a.*") == await store.keys(["a.*"]) == ["a.1", "a.2"]
    assert await consumer_count(jsflow_client, jsflow_bucket) == 0  # none left behind


async def test_a_watch_of_several_filters_yields_changes_of_matching_keys_only(
    jsflow_client: jsflow.Client, jsflow_bucket: str
) -> None:
    store = await jsflow_client.object_store(jsflow_bucket, int, history=10)
    await store.put("a.1", 1)
    await store.put("x.1", 100)
    await store.put("b.deep.1", 2)
    async with asyncio.timeout(30), store.watch(["a.*", "b.>", "b.deep.1"]) as watch:
        # the latest value of each matching key first, on one consumer
        assert await take(watch, 2) == [("a.1", 1, jsflow.Op.PUT), ("b.deep.1", 2, jsflow.Op.PUT)]
        assert await consumer_count(jsflow_client, jsflow_bucket) == 1
        # then changes of matching keys as they happen, in revision order
        await store.put("x.1", 101)
        await store.put("b.2", 3)
        await store.delete("a.1")
        await store.put("a.b.c", 102)  # a.* is one token: not this
        await store.put("a.2", 4)
        assert await take(watch, 3) == [
            ("b.2", 3, jsflow.Op.PUT),
            ("a.1", None, jsflow.Op.DELETE),
            ("a.2", 4, jsflow.Op.PUT),
        ]
    assert await consumer_count(jsflow_client, jsflow_bucket) == 0


async def test_patterns_that_overlap_yield_each_change_once(
    jsflow_client: jsflow.Client, jsflow_bucket: str
) -> None:
    # given patterns that share keys, neither covering the other (buyer or seller is me)
    store = await jsflow_client.object_store(jsflow_bucket, int)
    await store.put("me.me", 1)
    await store.put("me.you", 2)
    await store.put("you.you", 3)
    patterns = ["me.*", "*.me"]
    assert await store.keys(patterns) == ["me.me", "me.you"]
    async with asyncio.timeout(30), store.watch(patterns) as watch:
        assert await take(watch, 2) == [("me.me", 1, jsflow.Op.PUT), ("me.you", 2, jsflow.Op.PUT)]
        await store.put("me.me", 4)
        await store.put("you.me", 5)
        await store.put("you.you", 6)
        await store.put("me.you", 7)
        assert await take(watch, 3) == [
            ("me.me", 4, jsflow.Op.PUT),
            ("you.me", 5, jsflow.Op.PUT),
            ("me.you", 7, jsflow.Op.PUT),
        ]


async def test_watch_options_combine_with_several_filters(
    jsflow_client: jsflow.Client, jsflow_bucket: str
) -> None:
    store = await jsflow_client.object_store(jsflow_bucket, int, history=10)
    await store.put("a", 1)
    mark = await store.put("b", 10)
    await store.put("a", 2)
    await store.put("c", 100)
    await store.delete("b")
    await store.put("b", 11)
    filters = ["a", "b"]
    async with asyncio.timeout(30):
        async with store.watch(filters, include_history=True) as watch:
            assert [(c.key, c.value) for c in [await next_change(watch) for _ in range(5)]] == [
                ("a", 1),
                ("b", 10),
                ("a", 2),
                ("b", None),
                ("b", 11),
            ]
        async with store.watch(filters, include_history=True, ignore_deletes=True) as watch:
            assert [c.value for c in [await next_change(watch) for _ in range(4)]] == [
                1,
                10,
                2,
                11,
            ]
        async with store.watch(filters, from_revision=mark.revision) as watch:
            assert [(c.key, c.value) for c in [await next_change(watch) for _ in range(4)]] == [
                ("b", 10),
                ("a", 2),
                ("b", None),
                ("b", 11),
            ]
        async with store.watch(filters, updates_only=True) as watch:
            await store.put("c", 101)
            await store.delete("a")
            await store.put("b", 12)
            assert await take(watch, 2) == [
                ("a", None, jsflow.Op.DELETE),
                ("b", 12, jsflow.Op.PUT),
            ]
        async with store.watch(filters, ignore_deletes=True) as watch:  # latest: a deleted
            assert await take(watch, 1) == [("b", 12, jsflow.Op.PUT)]


async def test_a_watch_of_several_filters_keeps_them_when_its_consumer_is_recreated(
    jsflow_client: jsflow.Client, jsflow_bucket: str
) -> None:
    # given a watch of two keys, and its consumer deleted on the server behind its back
    store = await jsflow_client.object_store(jsflow_bucket, int, history=10)
    async with asyncio.timeout(60), store.watch(["a", "b"], updates_only=True) as watch:
        await store.put("a", 1)
        assert await take(watch, 1) == [("a", 1, jsflow.Op.PUT)]
        info = await jsflow_client.js.stream_info(f"KV_{jsflow_bucket}")
        assert info.state.consumer_count == 1
        async with await second_client(jsflow_client) as other:
            consumers = await other.js.consumers_info(f"KV_{jsflow_bucket}")
            assert sorted(consumers[0].config.filter_subjects or []) == [
                f"$KV.{jsflow_bucket}.a",
                f"$KV.{jsflow_bucket}.b",
            ]
            await other.js.delete_consumer(f"KV_{jsflow_bucket}", consumers[0].name)
        # when other keys and the watched ones change meanwhile
        await store.put("c", 100)
        await store.put("b", 2)
        await store.put("c", 101)
        await store.put("a", 3)
        # then the re-created consumer (after missed heartbeats) still filters on both
        assert await take(watch, 2) == [("b", 2, jsflow.Op.PUT), ("a", 3, jsflow.Op.PUT)]


async def _put_when_back(store: jsflow.ObjectStore[int], key: str, value: int) -> None:
    for _ in range(100):
        try:
            await store.put(key, value)
            return
        except (jsflow.ConnectionFailedError, jsflow.RequestTimeoutError, jsflow.ServerError):
            await asyncio.sleep(0.1)
    raise AssertionError("the server did not come back")


async def test_a_watch_of_several_filters_resumes_on_them_after_a_server_restart() -> None:
    # given a watch of two patterns on a server of this test's own, that saw a change
    async with (
        asyncio.timeout(60),
        jsflow.EmbeddedServer() as server,
        await jsflow.connect(server.url) as client,
    ):
        store = await client.object_store("restart", int, history=20)
        async with store.watch(["a.*", "b"], updates_only=True) as watch:
            first = await store.put("a.1", 1)
            assert (await next_change(watch)).revision == first.revision
            # when the server restarts and both watched and other keys change after it
            await server.restart()
            for key, value in [("x", 100), ("b", 2), ("a.x.y", 101), ("a.2", 3)]:
                await _put_when_back(store, key, value)
            # then the resumed consumer delivers exactly the watched ones, once each
            assert await take(watch, 2) == [("b", 2, jsflow.Op.PUT), ("a.2", 3, jsflow.Op.PUT)]
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(anext(watch), 1.5)


@pytest.mark.parametrize(
    ("filters", "error", "named"),
    [
        ([], jsflow.ConfigError, "empty"),
        (["a", "b c"], jsflow.InvalidKeyError, "b c"),
        (["a", "x.>.y"], jsflow.InvalidKeyError, "x.>.y"),
        (["a", 5], jsflow.InvalidKeyError, "5"),
        (["x"] * 1001, jsflow.ConfigError, "1000"),
        (b"a", jsflow.ConfigError, "must be a key pattern or a list"),
        (7, jsflow.ConfigError, "must be a key pattern or a list"),
    ],
)
async def test_bad_filter_lists_fail_before_any_io(
    jsflow_client: jsflow.Client,
    jsflow_bucket: str,
    filters: object,
    error: type[Exception],
    named: str,
) -> None:
    # given a store whose connection is closed (any I/O would fail with another error)
    client = await second_client(jsflow_client)
    store = await client.object_store(jsflow_bucket, int)
    await client.nc.close()
    # when / then keys(), entries() and watch() raise the validation error naming it
    with pytest.raises(error, match=named):
        await store.keys(filters)  # type: ignore[arg-type]
    with pytest.raises(error, match=named):
        await store.entries(filters)  # type: ignore[arg-type]
    with pytest.raises(error, match=named):
        store.watch(filters)  # type: ignore[arg-type]
