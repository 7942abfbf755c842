"""jsflow.testing in a user's own project: an isolated app and worker per test, a module
level app bound by every test, and a clear refusal of loop scopes that cannot work.
Each case runs pytest on a small generated project in a subprocess."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

TASKS = """
import jsflow
app = jsflow.App(None, "shop")

@app.task
async def greet(name: str) -> str:
    return f"hello {name}"
"""

TESTS = """
import asyncio
import tasksmod

async def test_one(jsflow_worker):
    handle = await tasksmod.greet.submit("ada")
    assert await handle.result(timeout=10) == "hello ada"

async def test_leaves_a_request_behind(jsflow_app):
    await tasksmod.greet.submit("left behind")  # no worker in this test

async def test_two(jsflow_worker, jsflow_app):
    handle = await tasksmod.greet.submit("bob")
    assert await handle.result(timeout=10) == "hello bob"
    await asyncio.sleep(0.5)
    infos = await (await jsflow_app.backend()).store.list()
    assert [i.status.value for i in infos] == ["SUCCEEDED"]  # nothing of the other tests
"""


def _project(root: Path, ini: str) -> Path:
    (root / "tasksmod.py").write_text(TASKS)
    (root / "conftest.py").write_text('pytest_plugins = ["jsflow.testing"]\n')
    (root / "test_user.py").write_text(TESTS)
    (root / "pyproject.toml").write_text(
        f'[tool.pytest.ini_options]\njsflow_app = "tasksmod:app"\n{ini}'
    )
    return root


def _pytest(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", "-p", "no:cacheprovider"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(
    "ini",
    [
        'asyncio_mode = "auto"\nasyncio_default_fixture_loop_scope = "session"\n'
        'asyncio_default_test_loop_scope = "session"\n',
        'asyncio_mode = "auto"\n',  # pytest-asyncio's defaults: a loop per test
    ],
    ids=["session-loops", "default-loops"],
)
def test_each_test_gets_its_own_app_namespace_and_worker(tmp_path: Path, ini: str) -> None:
    result = _pytest(_project(tmp_path, ini))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 passed" in result.stdout


def test_mismatched_loop_scopes_are_refused_with_the_fix(tmp_path: Path) -> None:
    ini = (
        'asyncio_mode = "auto"\nasyncio_default_fixture_loop_scope = "session"\n'
        'asyncio_default_test_loop_scope = "function"\n'
    )
    result = _pytest(_project(tmp_path, ini))
    assert result.returncode != 0
    assert 'asyncio_default_test_loop_scope = "session"' in result.stdout + result.stderr
