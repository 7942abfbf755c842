"""purge_deletes() (nats.go's PurgeDeletes): keys whose latest entry is a delete or purge
marker lose their history; markers older than older_than go too, younger ones stay alone;
live keys are untouched; a cleaned key can be created again; bad arguments fail before
any I/O."""

from __future__ import annotations

import asyncio

import pytest

import jsflow
from tests.support.names import second_client


async def _values(client: jsflow.Client, bucket: str) -> int:
    info = await client.js.stream_info(f"KV_{bucket}")
    return int(info.state.messages)


async def test_older_than_zero_removes_every_marker_with_its_history(
    jsflow_client: jsflow.Client, jsflow_bucket: str
) -> None:
    # given live keys, a deleted key with history, a purged key and a key deleted then
    # written again
    store = await jsflow_client.object_store(jsflow_bucket, int, history=10)
    await store.put("live", 1)
    await store.put("live", 2)
    await store.put("deleted", 1)
    await store.put("deleted", 2)
    await store.delete("deleted")
    await store.put("purged", 1)
    await store.purge("purged")
    await store.put("back", 1)
    await store.delete("back")
    await store.put("back", 2)
    # when every marker is purged
    assert await store.purge_deletes(older_than=0) == 2
    # then the deleted and purged keys are gone from the server, the others untouched
    assert await store.history("deleted") == []
    assert await store.history("purged") == []
    assert [c.value for c in await store.history("live")] == [1, 2]
    assert [c.value for c in await store.history("back")] == [1, None, 2]
    assert await store.keys() == ["back", "live"]
    assert await _values(jsflow_client, jsflow_bucket) == 5
    # and a second run finds nothing more to clean
    assert await store.purge_deletes(older_than=-1) == 0


async def test_young_markers_stay_alone_and_old_ones_go(
    jsflow_client: jsflow.Client, jsflow_bucket: str
) -> None:
    async with asyncio.timeout(60):
        # given a key deleted long enough ago and keys deleted and purged just now
        store = await jsflow_client.object_store(jsflow_bucket, int, history=10)
        await store.put("old", 1)
        await store.put("old", 2)
        await store.delete("old")
        await asyncio.sleep(4)  # the marker of "old" ages past older_than below
        await store.put("young", 1)
        await store.put("young", 2)
        young = await store.history("young")
        await store.delete("young")
        await store.put("rolled", 1)
        await store.purge("rolled")  # a purge marker has nothing before it already
        # when markers older than 3 seconds are purged
        cleaned = await store.purge_deletes(older_than=3)
        # then the old marker and its history are gone
        assert cleaned == 2
        assert await store.history("old") == []
        # and the young delete marker stays, without the revisions before it
        history = await store.history("young")
        assert [(c.op, c.value) for c in history] == [(jsflow.Op.DELETE, None)]
        assert history[0].revision > young[-1].revision
        assert [c.op for c in await store.history("rolled")] == [jsflow.Op.PURGE]
        # and the default (30 minutes) keeps them as they are now
        assert await store.purge_deletes() == 0
        assert len(await store.history("young")) == 1


async def test_a_cleaned_key_can_be_created_again(
    jsflow_client: jsflow.Client, jsflow_bucket: str
) -> None:
    # given a key this store saw deleted (its marker remembered), then cleaned
    store = await jsflow_client.object_store(jsflow_bucket, int, history=5)
    await store.put("k", 1)
    await store.delete("k")
    assert await store.purge_deletes(older_than=0) == 1
    # when this store creates it again
    entry = await store.create("k", 2)
    # then it holds the new value, the only revision there is
    assert (await store.get("k")).value == 2  # type: ignore[union-attr]
    assert [c.revision for c in await store.history("k")] == [entry.revision]
    assert (await store.update("k", lambda n: n + 1)).value == 3
    with pytest.raises(jsflow.KeyExistsError):
        await store.create("k", 9)


async def test_an_empty_or_live_bucket_has_nothing_to_clean(
    jsflow_client: jsflow.Client, jsflow_bucket: str
) -> None:
    store = await jsflow_client.object_store(jsflow_bucket, int)
    assert await store.purge_deletes(older_than=0) == 0
    await store.put("a", 1)
    assert await store.purge_deletes(older_than=0) == 0
    assert await store.keys() == ["a"]


@pytest.mark.parametrize("older_than", ["60", True, float("nan"), float("inf"), None, 1e30])
async def test_a_bad_older_than_fails_before_any_io(
    jsflow_client: jsflow.Client, jsflow_bucket: str, older_than: object
) -> None:
    # given a store whose connection is closed (any I/O would fail with another error)
    client = await second_client(jsflow_client)
    store = await client.object_store(jsflow_bucket, int)
    await client.nc.close()
    # when / then
    with pytest.raises(jsflow.ConfigError, match="older_than"):
        await store.purge_deletes(older_than)  # type: ignore[arg-type]
