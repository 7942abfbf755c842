"""ObjectStore basics against a real server: binding, reads, writes, CAS, deletes, history,
TTL, spans (listing: test_store_listing.py; bad arguments: test_store_arguments.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import jsflow
from jsflow.errors import BucketError
from tests.support.names import second_client
from tests.support.polling import eventually


@dataclass
class Tally:
    n: int = 0
    seen: list[str] = field(default_factory=list)


async def test_get_of_absent_key_is_none(jsflow_client: jsflow.Client, jsflow_bucket: str) -> None:
    store = await jsflow_client.object_store(jsflow_bucket, int)
    assert await store.get("nothing") is None


async def test_put_then_get_returns_value_and_revision(
    jsflow_client: jsflow.Client, jsflow_bucket: str
) -> None:
    store = await jsflow_client.object_store(jsflow_bucket, str)
    first = await store.put("k", "a")
    second = await store.put("k", "b")
    assert second.revision > first.revision
    got = await store.get("k")
    assert got == jsflow.Entry("k", "b", second.revision)


async def test_object_store_is_idempotent_and_shared(
    jsflow_client: jsflow.Client, jsflow_bucket: str
) -> None:
    a = await jsflow_client.object_store(jsflow_bucket, int)
    b = await jsflow_client.object_store(jsflow_bucket, int)
    assert a is b
    async with await second_client(jsflow_client) as other:
        c = await other.object_store(jsflow_bucket, int)
        await a.put("k", 5)
        got = await c.get("k")
        assert got is not None and got.value == 5


async def test_binding_a_plain_stream_named_like_the_bucket_fails_at_once(
    jsflow_client: jsflow.Client, jsflow_bucket: str
) -> None:
    async with asyncio.timeout(10):
        # given a plain stream named KV_<bucket> that is not a KV bucket
        await jsflow_client.js.add_stream(
            name=f"KV_{jsflow_bucket}", subjects=[f"{jsflow_bucket}.>"]
        )
        try:
            # when it is bound as a bucket / then it fails at once, saying why
            with pytest.raises(BucketError, match="not the KV bucket"):
                await jsflow_client.object_store(jsflow_bucket, int)
        finally:
            await jsflow_client.js.delete_stream(f"KV_{jsflow_bucket}")


async def test_create_writes_only_when_absent(
    jsflow_client: jsflow.Client, jsflow_bucket: str
) -> None:
    # given a created key
    store = await jsflow_client.object_store(jsflow_bucket, int)
    entry = await store.create("k", 1)
    # when created again / then KeyExistsError carrying the current revision
    with pytest.raises(jsflow.KeyExistsError) as info:
        await store.create("k", 2)
    assert info.value.revision == entry.revision
    assert isinstance(info.value, jsflow.ConflictError)
    got = await store.get("k")
    assert got is not None and got.value == 1


async def test_create_over_a_deleted_key_works(
    jsflow_client: jsflow.Client, jsflow_bucket: str
) -> None:
    store = await jsflow_client.object_store(jsflow_bucket, int)
    await store.create("k", 1)
    await store.delete("k")
    entry = await store.create("k", 2)
    assert entry.value == 2
    with pytest.raises(jsflow.KeyExistsError):
        await store.create("k", 3)


async def test_create_over_a_purged_key_works(
    jsflow_client: jsflow.Client, jsflow_bucket: str
) -> None:
    store = await jsflow_client.object_store(jsflow_bucket, int)
    await store.put("k", 1)
    await store.purge("k")
    assert (await store.create("k", 2)).value == 2


async def test_create_from_another_client_sees_existing_key(
    jsflow_client: jsflow.Client, jsflow_bucket: str
) -> None:
    # given a key written by another client (this store's cache knows nothing of it)
    store = await jsflow_client.object_store(jsflow_bucket, int)
    async with await second_client(jsflow_client) as other:
        await (await other.object_store(jsflow_bucket, int)).put("k", 9)
    with pytest.raises(jsflow.KeyExistsError):
        await store.create("k", 1)


async def test_update_of_absent_key_starts_from_empty_value(
    jsflow_client: jsflow.Client, jsflow_bucket: str
) -> None:
    store = await jsflow_client.object_store(jsflow_bucket, Tally)
    seen: list[Tally] = []

    def record(t: Tally) -> Tally:
        seen.append(Tally(t.n, list(t.seen)))
        return Tally(t.n + 1, [*t.seen, "x"])

    entry = await store.update("k", record)
    assert seen == [Tally()]
    assert entry.value == Tally(1, ["x"])


async def test_update_accepts_in_place_mutation_or_returned_value(
    jsflow_client: jsflow.Client, jsflow_bucket: str
) -> None:
    # given a tally
    store = await jsflow_client.object_store(jsflow_bucket, Tally)

    def mutate(t: Tally) -> None:
        t.n += 1
        t.seen.append("mutated")

    # when one update mutates in place (returns None) and one returns a new value
    first = await store.update("k", mutate)
    second = await store.update("k", lambda t: Tally(t.n + 10, [*t.seen, "returned"]))
    # then both took effect, in order
    assert first.value == Tally(1, ["mutated"])
    assert second.value == Tally(11, ["mutated", "returned"])
    got = await store.get("k")
    assert got is not None and got.value == second.value and got.revision == second.revision


async def test_update_fn_exception_propagates_and_writes_nothing(
    jsflow_client: jsflow.Client, jsflow_bucket: str
) -> None:
    store = await jsflow_client.object_store(jsflow_bucket, int)
    await store.put("k", 1)

    def boom(n: int) -> int:
        raise KeyError("boom")

    with pytest.raises(KeyError):
        await store.update("k", boom)
    got = await store.get("k")
    assert got is not None and got.value == 1


async def test_update_rejects_async_fn(jsflow_client: jsflow.Client, jsflow_bucket: str) -> None:
    store = await jsflow_client.object_store(jsflow_bucket, int)

    async def fn(n: int) -> int:
        return n + 1

    with pytest.raises(jsflow.ConfigError):
        await store.update("k", fn)  # type: ignore[arg-type]
    with pytest.raises(jsflow.ConfigError):
        await store.update("k", 5)  # type: ignore[arg-type]
    assert await store.get("k") is None


async def test_update_sees_writes_of_other_clients(
    jsflow_client: jsflow.Client, jsflow_bucket: str
) -> None:
    # given this store cached revision r of the key
    store = await jsflow_client.object_store(jsflow_bucket, int)
    await store.update("k", lambda n: n + 1)
    # when another client writes the key behind its back
    async with await second_client(jsflow_client) as other:
        await (await other.object_store(jsflow_bucket, int)).put("k", 100)
    # then the next update applies to the fresh value, not the cached one
    assert (await store.update("k", lambda n: n + 1)).value == 101


async def test_compare_and_set_succeeds_only_on_latest_revision(
    jsflow_client: jsflow.Client, jsflow_bucket: str
) -> None:
    store = await jsflow_client.object_store(jsflow_bucket, int)
    created = await store.compare_and_set("k", 1, 0)
    with pytest.raises(jsflow.ConflictError):
        await store.compare_and_set("k", 2, 0)
    second = await store.compare_and_set("k", 2, created.revision)
    with pytest.raises(jsflow.ConflictError) as info:
        await store.compare_and_set("k", 3, created.revision)
    assert info.value.key == "k" and info.value.bucket == jsflow_bucket
    got = await store.get("k")
    assert got == jsflow.Entry("k", 2, second.revision)
    with pytest.raises(jsflow.ConfigError):
        await store.compare_and_set("k", 4, -1)


async def test_delete_hides_key_and_keeps_history(
    jsflow_client: jsflow.Client, jsflow_bucket: str
) -> None:
    store = await jsflow_client.object_store(jsflow_bucket, int, history=5)
    await store.put("k", 1)
    await store.delete("k")
    assert await store.get("k") is None
    ops = [(c.op, c.value) for c in await store.history("k")]
    assert ops == [(jsflow.Op.PUT, 1), (jsflow.Op.DELETE, None)]


async def test_delete_with_stale_revision_raises_conflict(
    jsflow_client: jsflow.Client, jsflow_bucket: str
) -> None:
    # given a key written twice
    store = await jsflow_client.object_store(jsflow_bucket, int)
    first = await store.put("k", 1)
    second = await store.put("k", 2)
    # when deleted at the stale revision / then ConflictError, and the key is still there
    with pytest.raises(jsflow.ConflictError):
        await store.delete("k", revision=first.revision)
    got = await store.get("k")
    assert got is not None and got.value == 2
    # when deleted at the latest revision / then it is gone
    await store.delete("k", revision=second.revision)
    assert await store.get("k") is None


async def test_update_after_delete_starts_from_empty(
    jsflow_client: jsflow.Client, jsflow_bucket: str
) -> None:
    store = await jsflow_client.object_store(jsflow_bucket, int)
    await store.put("k", 41)
    await store.delete("k")
    assert (await store.update("k", lambda n: n + 1)).value == 1


async def test_purge_removes_every_revision(
    jsflow_client: jsflow.Client, jsflow_bucket: str
) -> None:
    store = await jsflow_client.object_store(jsflow_bucket, int, history=5)
    for i in range(3):
        await store.put("k", i)
    await store.put("other", 7)
    await store.purge("k")
    assert await store.get("k") is None
    history = await store.history("k")
    assert [c.op for c in history] == [jsflow.Op.PURGE]
    assert [c.value for c in await store.history("other")] == [7]


async def test_reset_writes_the_empty_value(
    jsflow_client: jsflow.Client, jsflow_bucket: str
) -> None:
    store = await jsflow_client.object_store(jsflow_bucket, Tally)
    await store.put("k", Tally(5, ["a"]))
    entry = await store.reset("k")
    assert entry.value == Tally()
    got = await store.get("k")
    assert got is not None and got.value == Tally()


async def test_history_keeps_the_last_n_revisions(
    jsflow_client: jsflow.Client, jsflow_bucket: str
) -> None:
    # given a bucket with history=5 and seven writes of one key
    store = await jsflow_client.object_store(jsflow_bucket, int, history=5)
    entries = [await store.put("k", i) for i in range(7)]
    await store.put("other", 99)
    # when its history is read / then the last five, oldest first, with their revisions
    history = await store.history("k")
    assert [c.value for c in history] == [2, 3, 4, 5, 6]
    assert [c.revision for c in history] == [e.revision for e in entries[2:]]
    assert all(c.op is jsflow.Op.PUT and c.key == "k" for c in history)
    assert await store.history("never") == []


async def test_bucket_ttl_expires_keys(jsflow_client: jsflow.Client, jsflow_bucket: str) -> None:
    # given a bucket whose keys live one second
    store = await jsflow_client.object_store(jsflow_bucket, int, ttl=1.0)
    await store.put("k", 1)

    # when time passes / then the key is gone (the server expires on a ~1 s tick)
    async def gone() -> bool:
        return await store.get("k") is None

    await eventually(gone, "the key's expiry", timeout=8.0)


async def test_per_key_ttl_expires_only_that_key(
    jsflow_client: jsflow.Client, jsflow_bucket: str
) -> None:
    # given one key written with ttl=1 and one without
    store = await jsflow_client.object_store(jsflow_bucket, int)
    await store.put("short", 1, ttl=1.0)
    await store.create("created", 1, ttl=1.0)
    await store.update("updated", lambda n: n + 1, ttl=1.0)
    await store.put("long", 1)

    async def all_gone() -> bool:
        return all([await store.get(k) is None for k in ("short", "created", "updated")])

    # then the TTL'd keys expire and the other stays
    await eventually(all_gone, "the keys' expiry", timeout=8.0)
    got = await store.get("long")
    assert got is not None and got.value == 1
    # and an update after expiry starts from empty again
    assert (await store.update("updated", lambda n: n + 1)).value == 1


async def test_a_fractional_ttl_is_kept_at_least_that_long(
    jsflow_client: jsflow.Client, jsflow_bucket: str
) -> None:
    async with asyncio.timeout(20):
        # given a key written with ttl=1.5 (the server keeps whole seconds)
        store = await jsflow_client.object_store(jsflow_bucket, int)
        loop = asyncio.get_running_loop()
        sent = loop.time()
        await store.put("k", 1, ttl=1.5)
        # then it is there until 1.5 s have passed (read until shortly before)
        while loop.time() < sent + 1.4:
            assert await store.get("k") is not None
            await asyncio.sleep(0.05)
        # and it does expire
        while await store.get("k") is not None:
            await asyncio.sleep(0.1)


async def test_closed_store_refuses_updates(
    jsflow_client: jsflow.Client, jsflow_bucket: str
) -> None:
    store = await jsflow_client.object_store(jsflow_bucket, int)
    await store.aclose()
    with pytest.raises(jsflow.JsflowError):
        await store.update("k", lambda n: n + 1)


@pytest.fixture(scope="module")
def spans() -> Iterator[InMemorySpanExporter]:
    """Finished spans, via an in-memory exporter on the SDK tracer provider."""
    exporter = InMemorySpanExporter()
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
        provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider), "another tracer provider is installed"
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield exporter
    exporter.shutdown()


async def test_update_emits_a_span_with_bucket_key_and_attempts(
    jsflow_client: jsflow.Client, jsflow_bucket: str, spans: InMemorySpanExporter
) -> None:
    # given an SDK tracer provider with an in-memory exporter
    store = await jsflow_client.object_store(jsflow_bucket, int)
    spans.clear()
    # when a key is updated
    await store.update("traced", lambda n: n + 1)
    # then an update span carries the bucket, key and attempts
    found = [
        s
        for s in spans.get_finished_spans()
        if s.name == "jsflow.store.update" and (s.attributes or {}).get("jsflow.key") == "traced"
    ]
    assert len(found) == 1
    attrs = found[0].attributes or {}
    assert attrs["jsflow.bucket"] == jsflow_bucket
    assert attrs["jsflow.attempts"] == 1
