"""Watch.caught_up is the "initial values done" marker: true exactly once every change in the
bucket when the watch started has been yielded, whatever the options."""

from __future__ import annotations

import asyncio

import jsflow


async def _fill(store: jsflow.ObjectStore[int]) -> None:
    await store.put("a.1", 1)
    await store.put("a.2", 2)
    await store.put("a.1", 3)
    await store.put("b.1", 9)


async def test_caught_up_turns_true_with_the_last_initial_value(
    jsflow_client: jsflow.Client, jsflow_bucket: str
) -> None:
    store = await jsflow_client.object_store(jsflow_bucket, int, history=5)
    await _fill(store)
    async with asyncio.timeout(15), store.watch("a.>") as watch:
        assert not watch.caught_up
        first = await anext(watch)
        assert not watch.caught_up  # one more initial value to come
        second = await anext(watch)
        assert watch.caught_up  # both latest values yielded
        assert sorted([(first.key, first.value), (second.key, second.value)]) == [
            ("a.1", 3),
            ("a.2", 2),
        ]
        await store.put("a.3", 4)
        assert (await anext(watch)).key == "a.3" and watch.caught_up


async def test_caught_up_with_history_comes_after_every_retained_revision(
    jsflow_client: jsflow.Client, jsflow_bucket: str
) -> None:
    store = await jsflow_client.object_store(jsflow_bucket, int, history=5)
    await _fill(store)
    async with asyncio.timeout(15), store.watch("a.>", include_history=True) as watch:
        seen = []
        while not watch.caught_up:
            change = await anext(watch)
            seen.append((change.key, change.value))
    assert seen == [("a.1", 1), ("a.2", 2), ("a.1", 3)]


async def test_an_empty_start_and_updates_only_are_caught_up_at_once(
    jsflow_client: jsflow.Client, jsflow_bucket: str
) -> None:
    store = await jsflow_client.object_store(jsflow_bucket, int)
    async with asyncio.timeout(15):
        async with store.watch("nothing.>") as empty:
            await store.put("nothing.1", 1)
            change = await anext(empty)  # the marker was queued before this change
            assert empty.caught_up and change.key == "nothing.1"
        await _fill(store)
        async with store.watch("a.>", updates_only=True) as updates:
            assert updates.caught_up


async def test_a_last_initial_delete_left_out_still_marks_caught_up(
    jsflow_client: jsflow.Client, jsflow_bucket: str
) -> None:
    store = await jsflow_client.object_store(jsflow_bucket, int)
    await store.put("a.1", 1)
    await store.put("a.2", 2)
    await store.delete("a.2")  # the newest initial entry is a delete marker
    async with asyncio.timeout(15), store.watch("a.>", ignore_deletes=True) as watch:
        assert (await anext(watch)).key == "a.1"
        await store.put("a.3", 3)
        assert (await anext(watch)).key == "a.3"
        assert watch.caught_up
