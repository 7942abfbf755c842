"""EmbeddedServer and LocalCluster arguments, and finding the nats-server binary: wrong ones
fail with a typed error before any process starts, leaving nothing behind (no server)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

import jsflow
from jsflow.errors import ServerStartError
from jsflow.server import find_server_binary


def test_server_start_error_is_a_jsflow_error() -> None:
    assert issubclass(jsflow.ServerStartError, jsflow.JsflowError)
    assert jsflow.ServerStartError is ServerStartError


def test_url_before_start_is_an_error() -> None:
    with pytest.raises(jsflow.ServerStartError):
        _ = jsflow.EmbeddedServer().url


async def test_missing_binary_raises_server_not_found(monkeypatch: pytest.MonkeyPatch) -> None:
    # given JSFLOW_NATS_SERVER naming a file that does not exist
    monkeypatch.setenv("JSFLOW_NATS_SERVER", "/nonexistent/nats-server")
    # when a server starts / then ServerNotFoundError names the extra to install
    with pytest.raises(jsflow.ServerNotFoundError) as info:
        async with jsflow.EmbeddedServer():
            pass
    assert "jsflow[embedded]" in str(info.value)


def test_binary_absent_everywhere_raises_server_not_found(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # given no env override, no binary beside the interpreter, and an empty PATH
    monkeypatch.delenv("JSFLOW_NATS_SERVER", raising=False)
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(jsflow.ServerNotFoundError) as info:
        find_server_binary()
    assert "jsflow[embedded]" in str(info.value)
    assert isinstance(info.value, FileNotFoundError)


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


def test_local_cluster_rejects_size_zero() -> None:
    with pytest.raises(jsflow.ConfigError):
        jsflow.LocalCluster(0)
