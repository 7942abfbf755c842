"""``replicas=`` on one server: asking for more copies than the servers can hold is a
ConfigError naming the replicas, never a silent single copy (out-of-range values:
unit/test_connect_arguments.py; on a cluster: system/test_replication.py)."""

from __future__ import annotations

import asyncio

import pytest

import jsflow
from jsflow.errors import ConfigError
from jsflow.flow.streams import ensure_stream
from jsflow.tasks.app import App
from tests.support.names import uniq

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_more_replicas_than_servers_is_a_config_error_naming_them(
    jsflow_server: jsflow.EmbeddedServer,
) -> None:
    async with asyncio.timeout(20), await jsflow.connect(jsflow_server.url, replicas=3) as client:
        assert client.replicas == 3
        with pytest.raises(ConfigError, match="replicas=3"):
            await ensure_stream(client, uniq("R3"), [f"{uniq('r3')}.>"])
        with pytest.raises(ConfigError, match="replicas=3"):
            await App(client, uniq("r3app")).backend()


async def test_a_per_object_replicas_overrides_the_client_default(
    jsflow_server: jsflow.EmbeddedServer,
) -> None:
    async with asyncio.timeout(20), await jsflow.connect(jsflow_server.url, replicas=3) as client:
        name = uniq("R1")
        await ensure_stream(client, name, [f"{name.lower()}.>"], replicas=1)
        info = await client.js.stream_info(name)
        assert info.config.num_replicas == 1


async def test_a_bucket_with_more_replicas_than_servers_is_a_config_error(
    jsflow_server: jsflow.EmbeddedServer,
) -> None:
    async with asyncio.timeout(20), await jsflow.connect(jsflow_server.url, replicas=3) as client:
        with pytest.raises(ConfigError, match="replicas=3"):
            await client.object_store(uniq("r3kv"), int)
        with pytest.raises(ConfigError, match="replicas=3"):
            await client.lock(uniq("r3lock"), bucket=uniq("r3locks")).acquire(timeout=1)
