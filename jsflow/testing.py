"""pytest fixtures that give a test a real nats-server and a connected client in one line.

Enable them in a ``conftest.py`` with ``pytest_plugins = ["jsflow.testing"]``, then::

    async def test_counter(jsflow_client):
        store = await jsflow_client.object_store("counts", int)
        assert (await store.update("hits", lambda n: n + 1)).value == 1

``jsflow_server`` is one :class:`EmbeddedServer` per test session; ``jsflow_client`` is a
fresh :class:`Client` per test; ``jsflow_bucket`` is a bucket name unique to the test.
Async fixtures need pytest-asyncio with session-scoped loops (``asyncio_mode = "auto"``,
``asyncio_default_fixture_loop_scope = "session"``, ``asyncio_default_test_loop_scope =
"session"``).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from jsflow.client import Client, connect
from jsflow.server import EmbeddedServer

__all__ = ["jsflow_bucket", "jsflow_client", "jsflow_server"]


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def jsflow_server() -> AsyncIterator[EmbeddedServer]:
    """One real nats-server with JetStream for the whole test session."""
    async with EmbeddedServer() as server:
        yield server


@pytest_asyncio.fixture(loop_scope="session")
async def jsflow_client(jsflow_server: EmbeddedServer) -> AsyncIterator[Client]:
    """A client connected to :func:`jsflow_server`, closed after the test."""
    client = await connect(jsflow_server.url)
    async with client:
        yield client


@pytest.fixture
def jsflow_bucket(request: pytest.FixtureRequest) -> str:
    """A bucket name unique to this test (letters, digits, ``-`` and ``_`` only)."""
    base = re.sub(r"[^A-Za-z0-9_-]", "_", request.node.name)[:40]
    return f"{base}_{uuid.uuid4().hex[:8]}"
