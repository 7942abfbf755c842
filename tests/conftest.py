"""Shared fixtures: a real nats-server per session (jsflow.testing), an empty directory for
temporary files, and hypothesis profiles. Builders and polling helpers: tests/support."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from jsflow.observability import reset_logging

pytest_plugins = ["jsflow.testing"]

settings.register_profile(
    "default",
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
settings.register_profile("ci", parent=settings.get_profile("default"), derandomize=True)
settings.load_profile("ci" if os.environ.get("CI") else "default")


@pytest.fixture
def temp_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Where temporary store dirs go for this test (empty at the start)."""
    root = tmp_path / "tmp"
    root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    yield root


@pytest.fixture(autouse=True)
def _jsflow_logging_reset() -> Iterator[None]:
    """A CLI test that ran `jsflow worker` in this process configured jsflow's logging for
    the whole process: undo it, so the next test sees the default rendering."""
    yield
    reset_logging()
