"""The KV surface users know from nats.go's kv package: a value at a revision, bucket
status, watches that resume from a revision or skip deletes, purge with an expected
revision, listing and deleting buckets."""

from __future__ import annotations

import asyncio
import uuid

import pytest

import jsflow


def _bucket() -> str:
    return f"kvs_{uuid.uuid4().hex[:8]}"


async def test_get_at_a_revision_reads_that_revision_of_that_key(
    jsflow_client: jsflow.Client,
) -> None:
    store = await jsflow_client.object_store(_bucket(), int, history=5)
    first = await store.put("a", 1)
    other = await store.put("b", 100)
    await store.put("a", 2)
    await store.delete("a")
    assert (await store.get("a", revision=first.revision)).value == 1  # type: ignore[union-attr]
    assert await store.get("a", revision=other.revision) is None  # b's revision, not a's
    assert await store.get("a") is None
    with pytest.raises(jsflow.ConfigError, match="revision"):
        await store.get("a", revision=0)


async def test_status_reports_what_the_server_holds(jsflow_client: jsflow.Client) -> None:
    store = await jsflow_client.object_store(_bucket(), str, history=3, ttl=3600)
    await store.put("x", "1")
    await store.put("x", "2")
    await store.put("y", "3")
    status = await store.status()
    assert (status.values, status.keys, status.history, status.replicas) == (3, 2, 3, 1)
    assert status.ttl == 3600 and status.bytes > 0


async def test_a_watch_resumes_from_a_revision_and_can_skip_deletes(
    jsflow_client: jsflow.Client,
) -> None:
    store = await jsflow_client.object_store(_bucket(), int, history=10)
    await store.put("k", 1)
    mark = await store.put("k", 2)
    await store.delete("k")
    await store.put("k", 3)
    async with asyncio.timeout(10):
        async with store.watch("k", from_revision=mark.revision) as watch:
            seen = [(await anext(watch)).value for _ in range(3)]
        assert seen == [2, None, 3]
        async with store.watch("k", from_revision=mark.revision, ignore_deletes=True) as watch:
            seen = [(await anext(watch)).value for _ in range(2)]
        assert seen == [2, 3]
    with pytest.raises(jsflow.ConfigError):
        store.watch("k", from_revision=1, updates_only=True)


async def test_purge_with_an_expected_revision_refuses_a_newer_write(
    jsflow_client: jsflow.Client,
) -> None:
    store = await jsflow_client.object_store(_bucket(), int, history=5)
    old = await store.put("k", 1)
    await store.put("k", 2)
    with pytest.raises(jsflow.ConflictError):
        await store.purge("k", revision=old.revision)
    assert (await store.get("k")).value == 2  # type: ignore[union-attr]
    latest = await store.get("k")
    await store.purge("k", revision=latest.revision)  # type: ignore[union-attr]
    assert await store.history("k") == [] or all(c.value is None for c in await store.history("k"))


async def test_buckets_are_listed_and_deleted(jsflow_client: jsflow.Client) -> None:
    name = _bucket()
    store = await jsflow_client.object_store(name, int)
    await store.put("k", 1)
    assert name in await jsflow_client.buckets()
    assert await jsflow_client.delete_bucket(name) is True
    assert name not in await jsflow_client.buckets()
    assert await jsflow_client.delete_bucket(name) is False
    fresh = await jsflow_client.object_store(name, int)  # a new bucket, not the closed store
    assert await fresh.get("k") is None
