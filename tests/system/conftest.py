"""The 3-node cluster of the cluster tests: one per module that asks for it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio

import jsflow


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def cluster() -> AsyncIterator[jsflow.LocalCluster]:
    """One 3-node cluster for this module's tests."""
    async with jsflow.LocalCluster(3) as c:
        yield c
