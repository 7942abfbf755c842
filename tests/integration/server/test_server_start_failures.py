"""A server that does not start says why and leaves nothing behind; bad arguments fail early."""

from __future__ import annotations

import asyncio
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import jsflow
from jsflow.errors import ServerStartError


@pytest.fixture
def temp_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Where temporary store dirs go for this test (empty at the start)."""
    root = tmp_path / "tmp"
    root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    yield root


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


def test_server_start_error_is_a_jsflow_error() -> None:
    assert issubclass(jsflow.ServerStartError, jsflow.JsflowError)
    assert jsflow.ServerStartError is ServerStartError


@pytest.mark.parametrize(
    "kwargs",
    [
        {"port": "x"},
        {"port": -1},
        {"port": 70000},
        {"port": True},
        {"port": 4222.0},
        {"args": "-js"},
        {"args": ["-js", 1]},
        {"args": None},
        {"store_dir": 5},
        {"start_timeout": 0},
        {"start_timeout": "1"},
        {"name": 3},
        {"sync_always": "yes"},
    ],
)
async def test_wrong_typed_server_arguments_fail_before_any_process(
    kwargs: dict[str, Any], temp_root: Path
) -> None:
    with pytest.raises(jsflow.ConfigError):
        jsflow.EmbeddedServer(**kwargs)
    assert list(temp_root.iterdir()) == []


@pytest.mark.parametrize(
    "kwargs",
    [
        {"size": 0},
        {"size": "3"},
        {"size": 1.5},
        {"size": 10**6},
        {"name": "a b"},
        {"args": "-js"},
        {"store_dir": object()},
    ],
)
async def test_wrong_typed_cluster_arguments_fail_before_any_process(
    kwargs: dict[str, Any], temp_root: Path
) -> None:
    with pytest.raises(jsflow.ConfigError):
        jsflow.LocalCluster(**kwargs)
    assert list(temp_root.iterdir()) == []
