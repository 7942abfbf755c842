"""The public API imports and the embedded server round-trips a typed value."""

from __future__ import annotations

import asyncio

import pytest

import jsflow


def test_public_api_is_exported() -> None:
    for name in jsflow.__all__:
        assert hasattr(jsflow, name), name


async def test_update_round_trips_through_a_real_server(
    jsflow_client: jsflow.Client, jsflow_bucket: str
) -> None:
    store = await jsflow_client.object_store(jsflow_bucket, int)
    entry = await store.update("hits", lambda n: n + 1)
    assert entry.value == 1
    got = await store.get("hits")
    assert got is not None and got.value == 1 and got.revision == entry.revision


async def test_connect_to_nothing_fails_at_once_with_a_clear_error() -> None:
    # given no server on the port; when connecting; then a typed error says what to do, quickly
    with pytest.raises(jsflow.ConnectionFailedError, match="nothing is listening"):
        async with asyncio.timeout(10):
            await jsflow.connect("nats://127.0.0.1:1")
