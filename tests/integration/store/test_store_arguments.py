"""ObjectStore hardening: bounded names and keys, typed config errors, consistent listings,
buckets that are not buckets, and watches and waiters that end when their client closes."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

import jsflow
from jsflow.errors import (
    BucketError,
    ConfigError,
    ConnectionClosedError,
    InvalidKeyError,
    InvalidNameError,
)
from jsflow.store import ObjectStore, RetryPolicy

LONG = "x" * 5000

BadCall = Callable[[ObjectStore[int]], Awaitable[Any]]


async def _watch_next(store: ObjectStore[int], pattern: str) -> Any:
    async with store.watch(pattern) as watch:
        return await watch.__anext__()


BAD_KEY_CALLS: dict[str, BadCall] = {
    "get": lambda s: s.get(LONG),
    "put": lambda s: s.put(LONG, 1),
    "create": lambda s: s.create(LONG, 1),
    "update": lambda s: s.update(LONG, lambda n: n + 1),
    "compare_and_set": lambda s: s.compare_and_set(LONG, 1, 0),
    "delete": lambda s: s.delete(LONG),
    "purge": lambda s: s.purge(LONG),
    "reset": lambda s: s.reset(LONG),
    "history": lambda s: s.history(LONG),
    "listen": lambda s: s.listen(LONG),
    "keys": lambda s: s.keys(LONG),
    "keys_pattern": lambda s: s.keys("a." + "x" * 4100 + ".>"),
    "watch": lambda s: _watch_next(s, LONG + ".>"),
    "key()": lambda s: s.put(jsflow.key("a" * 3000, "b" * 3000), 1),
}


@pytest.mark.parametrize("call", sorted(BAD_KEY_CALLS))
async def test_an_oversized_key_fails_before_io_and_the_client_stays_usable(
    jsflow_client: jsflow.Client, jsflow_bucket: str, call: str
) -> None:
    async with asyncio.timeout(20):
        # given a store
        store = await jsflow_client.object_store(jsflow_bucket, int)
        # when a call is made with a key far past the bound
        with pytest.raises(InvalidKeyError):
            await BAD_KEY_CALLS[call](store)
        # then the same client still works
        assert (await store.update("ok", lambda n: n + 1)).value == 1
        assert jsflow_client.is_connected


@pytest.mark.parametrize("bucket", [LONG, "b" * 129, "a.b", ""])
async def test_an_illegal_bucket_name_fails_before_io_and_the_client_stays_usable(
    jsflow_client: jsflow.Client, jsflow_bucket: str, bucket: str
) -> None:
    async with asyncio.timeout(20):
        with pytest.raises(InvalidNameError):
            await jsflow_client.object_store(bucket, int)
        store = await jsflow_client.object_store(jsflow_bucket, int)
        assert (await store.update("ok", lambda n: n + 1)).value == 1


@pytest.mark.parametrize(
    ("options", "parameter"),
    [
        ({"ttl": "60"}, "ttl"),
        ({"ttl": math.nan}, "ttl"),
        ({"history": 0}, "history"),
        ({"history": 1000}, "history"),
        ({"history": "5"}, "history"),
        ({"replicas": 0}, "replicas"),
        ({"replicas": "3"}, "replicas"),
        ({"max_value_size": -5}, "max_value_size"),
        ({"max_value_size": "1k"}, "max_value_size"),
        ({"cache_size": 1.5}, "cache_size"),
        ({"retry": "fast"}, "retry"),
    ],
)
async def test_bad_bucket_options_raise_config_error_naming_them(
    jsflow_client: jsflow.Client, jsflow_bucket: str, options: dict[str, Any], parameter: str
) -> None:
    async with asyncio.timeout(10):
        with pytest.raises(ConfigError, match=parameter):
            await jsflow_client.object_store(jsflow_bucket, int, **options)
        # nothing was created
        assert jsflow_bucket not in [n async for n in _stream_names(jsflow_client)]


async def _stream_names(client: jsflow.Client) -> Any:
    for info in await client.js.streams_info():
        yield info.config.name.removeprefix("KV_")


@pytest.mark.parametrize(
    ("options", "parameter"),
    [
        ({"attempts": "3"}, "attempts"),
        ({"attempts": 0}, "attempts"),
        ({"initial_backoff": math.nan}, "initial_backoff"),
        ({"max_backoff": math.inf}, "max_backoff"),
        ({"deadline": "1"}, "deadline"),
        ({"deadline": 0}, "deadline"),
    ],
)
def test_bad_retry_policy_raises_config_error_naming_the_field(
    options: dict[str, Any], parameter: str
) -> None:
    with pytest.raises(ConfigError, match=parameter):
        RetryPolicy(**options)


WRITE_CALLS: dict[str, tuple[BadCall, str]] = {
    "put ttl str": (lambda s: s.put("k", 1, ttl="5"), "ttl"),  # type: ignore[arg-type]
    "put ttl nan": (lambda s: s.put("k", 1, ttl=math.nan), "ttl"),
    "create ttl list": (lambda s: s.create("k", 1, ttl=[5]), "ttl"),  # type: ignore[arg-type]
    "update ttl str": (lambda s: s.update("k", lambda n: n, ttl="5"), "ttl"),  # type: ignore[arg-type]
    "cas revision str": (lambda s: s.compare_and_set("k", 1, "x"), "revision"),  # type: ignore[arg-type]
    "cas revision negative": (lambda s: s.compare_and_set("k", 1, -1), "revision"),
    "delete revision str": (lambda s: s.delete("k", revision="3"), "revision"),  # type: ignore[arg-type]
}


@pytest.mark.parametrize("call", sorted(WRITE_CALLS))
async def test_bad_write_options_raise_config_error_and_write_nothing(
    jsflow_client: jsflow.Client, jsflow_bucket: str, call: str
) -> None:
    async with asyncio.timeout(10):
        store = await jsflow_client.object_store(jsflow_bucket, int)
        fn, parameter = WRITE_CALLS[call]
        with pytest.raises(ConfigError, match=parameter):
            await fn(store)
        assert await store.get("k") is None


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


async def test_keys_lists_every_stable_key_once_while_another_client_writes(
    jsflow_client: jsflow.Client, jsflow_bucket: str
) -> None:
    async with asyncio.timeout(60):
        # given 600 keys that exist throughout, 100 deleted throughout, and a client churning
        store = await jsflow_client.object_store(jsflow_bucket, int)
        stable = [f"s.{i:04d}" for i in range(600)]
        gone = [f"g.{i:04d}" for i in range(100)]
        await asyncio.gather(*(store.put(k, 0) for k in stable + gone))
        await asyncio.gather(*(store.delete(k) for k in gone))
        url = jsflow_client.nc.connected_url.geturl()  # type: ignore[union-attr]
        async with await jsflow.connect(url) as other:
            writer = await other.object_store(jsflow_bucket, int)
            stop = asyncio.Event()

            async def churn() -> None:
                n = 0
                while not stop.is_set():
                    n += 1
                    await asyncio.gather(
                        *(writer.put(k, n) for k in stable[n % 2 :: 2]),
                        writer.put(f"c.{n}", n),
                        writer.delete(f"c.{n - 1}"),
                    )

            task = asyncio.create_task(churn())
            try:
                await asyncio.sleep(0.05)
                # when keys are listed five times meanwhile
                for _ in range(5):
                    listed = await store.keys()
                    # then each stable key appears once, no deleted one appears
                    assert len(listed) == len(set(listed))
                    assert set(stable) <= set(listed)
                    assert not set(gone) & set(listed)
                    assert listed == sorted(listed)
            finally:
                stop.set()
                await task


async def test_keys_skips_deleted_purged_and_recreated_keys_correctly(
    jsflow_client: jsflow.Client, jsflow_bucket: str
) -> None:
    async with asyncio.timeout(10):
        store = await jsflow_client.object_store(jsflow_bucket, int, history=3)
        for k in ("live", "deleted", "purged", "back"):
            await store.put(k, 1)
        await store.delete("deleted")
        await store.purge("purged")
        await store.delete("back")
        await store.put("back", 2)
        assert await store.keys() == ["back", "live"]
        assert await store.keys("deleted") == []


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


async def _second_client(client: jsflow.Client, **options: Any) -> jsflow.Client:
    return await jsflow.connect(client.nc.connected_url.geturl(), **options)  # type: ignore[union-attr]


async def test_closing_the_client_ends_a_pending_watch_with_connection_closed(
    jsflow_client: jsflow.Client, jsflow_bucket: str
) -> None:
    async with asyncio.timeout(15):
        # given a watch of another client, iterated in a task that waits for a change
        other = await _second_client(jsflow_client)
        store = await other.object_store(jsflow_bucket, int)
        watch = store.watch(updates_only=True)
        await watch.start()
        before = asyncio.all_tasks()
        pending = asyncio.create_task(watch.__anext__())
        await asyncio.sleep(0.1)
        # when the client closes
        await other.close()
        # then the iteration ends with ConnectionClosedError, and so does the next one
        with pytest.raises(ConnectionClosedError):
            await pending
        with pytest.raises(ConnectionClosedError):
            await watch.__anext__()
        # and no jsflow task is left running
        await asyncio.sleep(0.1)
        left = [t for t in asyncio.all_tasks() - before if not t.done() and t is not pending]
        assert [t for t in left if "jsflow" in repr(t.get_coro())] == []


async def test_a_watch_ends_when_the_connection_closes_for_good(
    jsflow_client: jsflow.Client, jsflow_bucket: str
) -> None:
    async with asyncio.timeout(15):
        # given a watch of another client
        other = await _second_client(jsflow_client)
        store = await other.object_store(jsflow_bucket, int)
        watch = store.watch(updates_only=True)
        await watch.start()
        pending = asyncio.create_task(watch.__anext__())
        await asyncio.sleep(0.1)
        # when its connection closes without the client being closed
        await other.nc.close()
        # then the pending iteration ends with ConnectionClosedError within seconds
        with pytest.raises(ConnectionClosedError):
            await pending
        await other.close()


async def test_a_listener_waiting_on_a_closed_client_gets_connection_closed(
    jsflow_client: jsflow.Client, jsflow_bucket: str
) -> None:
    async with asyncio.timeout(15):
        other = await _second_client(jsflow_client)
        store = await other.object_store(jsflow_bucket, int)
        listener = await store.listen("k")
        pending = asyncio.create_task(listener.wait())
        await asyncio.sleep(0.1)
        await other.close()
        with pytest.raises(ConnectionClosedError):
            await pending
