"""A server or cluster that does not start says why and leaves nothing behind (bad arguments:
unit/test_server_arguments.py)."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

import jsflow
from jsflow.errors import ServerStartError


async def test_a_bad_flag_is_named_and_nothing_is_left_behind(temp_root: Path) -> None:
    # given a server started with a flag nats-server does not know
    with pytest.raises(ServerStartError) as info:
        async with asyncio.timeout(30), jsflow.EmbeddedServer(args=["-bogus"]):
            pass
    # then the error names the flag, and neither the store dir nor the log is left
    assert "flag provided but not defined: -bogus" in str(info.value).splitlines()[0]
    assert list(temp_root.iterdir()) == []


async def test_a_failed_start_leaves_the_users_store_dir(tmp_path: Path) -> None:
    # given a store dir of the user's and a flag the server rejects
    store = tmp_path / "js"
    server = jsflow.EmbeddedServer(store, args=["-bogus"])
    with pytest.raises(ServerStartError, match="-bogus"):
        async with asyncio.timeout(30):
            await server.start()
    # then the user's dir stays, the log this start created does not
    assert store.is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["js"]
    assert not server.running


async def test_a_port_in_use_is_named_as_the_cause(temp_root: Path) -> None:
    # given a port something else listens on
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        # when a server is started on it
        with pytest.raises(ServerStartError) as info:
            async with asyncio.timeout(30), jsflow.EmbeddedServer(port=port):
                pass
    # then the error says the address is in use, and nothing is left
    assert "address already in use" in str(info.value).splitlines()[0]
    assert list(temp_root.iterdir()) == []


async def test_a_failed_cluster_start_stops_its_servers_and_leaves_nothing(
    temp_root: Path,
) -> None:
    # given a cluster whose servers reject a flag
    cluster = jsflow.LocalCluster(2, args=["-bogus"])
    with pytest.raises(ServerStartError, match="flag provided but not defined: -bogus"):
        async with asyncio.timeout(30), cluster:
            pass
    # then no server runs and its temporary root is gone
    assert not any(s.running for s in cluster.servers)
    assert list(temp_root.iterdir()) == []
