"""Cancelling an update, or closing a watch, never hangs or poisons anyone else."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest

import jsflow


async def test_cancelled_queued_update_does_not_fail_the_others(
    jsflow_client: jsflow.Client, jsflow_bucket: str
) -> None:
    # given one update in flight and several queued behind it on the same key
    store = await jsflow_client.object_store(jsflow_bucket, int)
    await store.put("k", 0)
    tasks = [asyncio.create_task(store.update("k", lambda n: n + 1))]
    for _ in range(3):
        await asyncio.sleep(0)
    tasks += [asyncio.create_task(store.update("k", lambda n: n + 1)) for _ in range(5)]
    await asyncio.sleep(0)  # each new caller queued (or, the first of them, about to write)
    # when one of the queued callers is cancelled before its batch was applied
    tasks[3].cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    # then it alone is cancelled, every other caller got its entry, and the stored count
    # is the number of updates that reported success
    assert isinstance(results[3], asyncio.CancelledError)
    ok = [r for i, r in enumerate(results) if i != 3]
    assert all(isinstance(r, jsflow.Entry) for r in ok), ok
    got = await store.get("k")
    assert got is not None and got.value == len(ok)
    assert sorted(r.value for r in ok) == list(range(1, len(ok) + 1))  # type: ignore[union-attr]


async def test_update_cancelled_before_any_io_writes_nothing(
    jsflow_client: jsflow.Client, jsflow_bucket: str
) -> None:
    # given an uncontended key
    store = await jsflow_client.object_store(jsflow_bucket, int)
    before = await store.put("k", 0)
    # when an update is cancelled before it ever ran a step, alone or with company
    for company in (0, 2):
        first = asyncio.create_task(store.update("k", lambda n: n + 100))
        others = [asyncio.create_task(store.update("k", lambda n: n + 1)) for _ in range(company)]
        await asyncio.sleep(0)  # every task reached its first suspension
        first.cancel()
        done = await asyncio.gather(first, *others, return_exceptions=True)
        assert isinstance(done[0], asyncio.CancelledError)
        assert all(isinstance(r, jsflow.Entry) for r in done[1:])
    # then only the updates that returned were applied
    got = await store.get("k")
    assert got is not None and got.value == 2 and got.revision > before.revision


async def test_cancelled_waiters_at_every_step_never_hang_the_key(
    jsflow_client: jsflow.Client, jsflow_bucket: str
) -> None:
    # given bursts of updates where one caller is cancelled after every possible step
    store = await jsflow_client.object_store(jsflow_bucket, int)
    value = 0
    for steps in range(12):
        tasks = [asyncio.create_task(store.update("k", lambda n: n + 1)) for _ in range(4)]
        for _ in range(steps):
            await asyncio.sleep(0)
        tasks[steps % 4].cancel()
        results = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 30)
        # then nobody got anything but an entry or its own cancellation
        ok = 0
        for i, result in enumerate(results):
            if isinstance(result, asyncio.CancelledError):
                assert i == steps % 4
            else:
                assert isinstance(result, jsflow.Entry), result
                ok += 1
        got = await store.get("k")
        # and a caller cancelled mid-write may or may not have been applied, never twice
        assert got is not None and value + ok <= got.value <= value + ok + 1
        value = got.value
    # and the key still takes updates
    assert (await asyncio.wait_for(store.update("k", lambda n: n + 1), 30)).value == value + 1


async def test_closing_a_watch_ends_an_iteration_in_progress(
    jsflow_client: jsflow.Client, jsflow_bucket: str
) -> None:
    # given a task waiting for the next change of a watch
    store = await jsflow_client.object_store(jsflow_bucket, int)
    watch = store.watch("k", updates_only=True)
    await watch.start()

    async def consume() -> list[jsflow.Change[int]]:
        return [change async for change in watch]

    consumer = asyncio.create_task(consume())
    await asyncio.sleep(0)
    # when another task closes the watch
    await watch.aclose()
    # then the iteration ends instead of waiting forever
    assert await asyncio.wait_for(consumer, 30) == []


async def test_listen_on_a_closed_store_raises_instead_of_starting_a_watch(
    jsflow_client: jsflow.Client, jsflow_bucket: str
) -> None:
    store = await jsflow_client.object_store(jsflow_bucket, int)
    await store.aclose()
    with pytest.raises(jsflow.JsflowError, match="closed"):
        await store.listen("k")


async def test_client_hands_out_a_fresh_store_after_one_was_closed(
    jsflow_client: jsflow.Client, jsflow_bucket: str
) -> None:
    store = await jsflow_client.object_store(jsflow_bucket, int)
    await store.aclose()
    again = await jsflow_client.object_store(jsflow_bucket, int)
    assert again is not store and not again.closed
    assert (await again.update("k", lambda n: n + 1)).value == 1


async def test_an_update_fn_returning_the_wrong_type_fails_only_its_caller(
    jsflow_client: jsflow.Client, jsflow_bucket: str
) -> None:
    @dataclass
    class Box:
        n: int = 0

    store = await jsflow_client.object_store(jsflow_bucket, Box)

    def bump(b: Box) -> None:
        b.n += 1

    # given three concurrent updates, the middle one returning an int instead of a Box
    results = await asyncio.gather(
        store.update("k", bump),
        store.update("k", lambda b: b.n + 1),  # type: ignore[arg-type, return-value]
        store.update("k", bump),
        return_exceptions=True,
    )
    # then only that caller gets a CodecError that says what an update fn must return
    assert isinstance(results[1], jsflow.CodecError) and "return None" in str(results[1])
    assert [r.value.n for r in (results[0], results[2])] == [1, 2]  # type: ignore[union-attr]
    got = await store.get("k")
    assert got is not None and got.value.n == 2
