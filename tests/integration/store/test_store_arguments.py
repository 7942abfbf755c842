"""ObjectStore arguments: an illegal or oversized key or bucket name, and a wrong-typed bucket
or write option, fail with a typed error before any I/O, write nothing, and leave the client
usable."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

import jsflow
from jsflow.errors import (
    ConfigError,
    InvalidKeyError,
    InvalidNameError,
)
from jsflow.store import ObjectStore
from tests.support.names import second_client

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


async def test_store_methods_reject_bad_keys_before_any_io(
    jsflow_client: jsflow.Client, jsflow_bucket: str
) -> None:
    # given a store whose connection is closed (any I/O would fail with another error)
    client = await second_client(jsflow_client)
    store = await client.object_store(jsflow_bucket, int)
    await client.nc.close()
    bad = "a.*"
    # when / then every method raises InvalidKeyError, not a connection error
    with pytest.raises(jsflow.InvalidKeyError):
        await store.get(bad)
    with pytest.raises(jsflow.InvalidKeyError):
        await store.put(bad, 1)
    with pytest.raises(jsflow.InvalidKeyError):
        await store.create(bad, 1)
    with pytest.raises(jsflow.InvalidKeyError):
        await store.update(bad, lambda n: n + 1)
    with pytest.raises(jsflow.InvalidKeyError):
        await store.compare_and_set(bad, 1, 0)
    with pytest.raises(jsflow.InvalidKeyError):
        await store.delete(bad)
    with pytest.raises(jsflow.InvalidKeyError):
        await store.purge(bad)
    with pytest.raises(jsflow.InvalidKeyError):
        await store.reset(bad)
    with pytest.raises(jsflow.InvalidKeyError):
        await store.history(bad)
    with pytest.raises(jsflow.InvalidKeyError):
        await store.listen(bad)
    with pytest.raises(jsflow.InvalidKeyError):
        store.watch("a..b")
    with pytest.raises(jsflow.InvalidKeyError):
        await store.keys("a>")
    with pytest.raises(jsflow.InvalidKeyError):
        await store.get(None)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"history": 0},
        {"history": 65},
        {"replicas": 0},
        {"ttl": 0},
        {"ttl": -1.0},
        {"cache_size": -1},
    ],
)
async def test_object_store_rejects_bad_options(
    jsflow_client: jsflow.Client, jsflow_bucket: str, kwargs: dict[str, object]
) -> None:
    with pytest.raises(jsflow.ConfigError):
        await jsflow_client.object_store(jsflow_bucket, int, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["", "a.b", "a b", "a*", "ü"])
async def test_object_store_rejects_bad_bucket_names(
    jsflow_client: jsflow.Client, name: str
) -> None:
    with pytest.raises(jsflow.ConfigError):
        await jsflow_client.object_store(name, int)


async def test_bad_ttl_raises_config_error(
    jsflow_client: jsflow.Client, jsflow_bucket: str
) -> None:
    store = await jsflow_client.object_store(jsflow_bucket, int)
    for bad in (0.0, -1.0, float("inf"), float("nan")):
        with pytest.raises(jsflow.ConfigError):
            await store.put("k", 1, ttl=bad)
        with pytest.raises(jsflow.ConfigError):
            await store.update("k", lambda n: n, ttl=bad)
    assert await store.get("k") is None
