"""Coordination options checked when a primitive is made, before any I/O (on a client that
was never connected: any I/O would fail differently; no server)."""

from __future__ import annotations

import pytest

import jsflow
from jsflow.client import Client
from jsflow.coordination.lock import Lock
from jsflow.coordination.semaphore import Semaphore
from jsflow.coordination.wait_group import WaitGroup


@pytest.mark.parametrize("ttl", [0, -1, 0.5, float("inf")])
def test_bad_ttl_raises_config_error_before_io(ttl: float) -> None:
    # given a client object that was never connected: any I/O would fail differently
    client = object.__new__(Client)
    with pytest.raises(jsflow.ConfigError):
        Lock(client, "res", ttl=ttl)


def test_bad_name_raises_invalid_key_error() -> None:
    client = object.__new__(Client)
    with pytest.raises(jsflow.InvalidKeyError):
        Lock(client, "a b*", ttl=5)


@pytest.mark.parametrize("permits", [0, -1, True, 2.0])
def test_bad_permits_raise_config_error(permits: int) -> None:
    client = object.__new__(Client)
    with pytest.raises(jsflow.ConfigError):
        Semaphore(client, "pool", permits)


def test_bad_recheck_raises_config_error() -> None:
    with pytest.raises(jsflow.ConfigError):
        WaitGroup(object.__new__(Client), "batch", recheck=0)
