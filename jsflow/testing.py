"""pytest fixtures that give a test a real nats-server, a connected client, an isolated app
and a running worker, each in one line.

Enable them in a ``conftest.py`` with ``pytest_plugins = ["jsflow.testing"]``, then::

    async def test_counter(jsflow_client):
        store = await jsflow_client.object_store("counts", int)
        assert (await store.update("hits", lambda n: n + 1)).value == 1

    async def test_send(jsflow_worker):           # jsflow_app = "myproject.tasks:app"
        assert await (await send_email.submit("a@b.c")).result(timeout=10) == "sent"

* ``jsflow_server``: one :class:`EmbeddedServer` per test session;
* ``jsflow_client``: a fresh :class:`Client` per test, on the test's event loop;
* ``jsflow_bucket``: a bucket name unique to the test;
* ``jsflow_app``: the app named by the ``jsflow_app`` ini option (``"module:attr"``; or
  override the fixture), bound to the test's client in a namespace of its own (its
  subjects, durables and states are the test's alone: a request one test leaves behind
  never runs in another's worker); :func:`bound` does the same for any app;
* ``jsflow_worker``: a :class:`Worker` running ``jsflow_app``'s tasks during the test;
* ``jsflow_eager``: ``jsflow_app`` in eager mode (:meth:`App.eager`): each ``submit`` runs
  the task inline, through a worker's attempt code, and returns once it finished, so a
  unit test needs no worker and no waiting::

      async def test_send(jsflow_eager):
          handle = await send_email.submit("a@b.c")
          assert await handle.result() == "sent"  # already there

The session's server runs on pytest-asyncio's session loop; the client and worker follow
the test's loop. A configuration where fixtures and tests get different loops (fixture
loop scope ``session``, test loop scope ``function``) would make every request time out,
so it is refused at start with the settings to use.
"""

from __future__ import annotations

import importlib
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import pytest_asyncio

from jsflow.client import Client, connect
from jsflow.errors import ConfigError
from jsflow.server import EmbeddedServer
from jsflow.tasks.app import App
from jsflow.tasks.worker import Worker

__all__ = [
    "bound",
    "jsflow_app",
    "jsflow_bucket",
    "jsflow_client",
    "jsflow_eager",
    "jsflow_server",
    "jsflow_worker",
    "pytest_addoption",
    "pytest_configure",
]

_LOOP_HINT = """jsflow.testing: pytest-asyncio runs fixtures on the {fixture!r} event loop and
tests on the {test!r} one, so a client made by a fixture would wait forever on a loop that is
not running. Use the same scope for both, e.g. in pyproject.toml:

[tool.pytest.ini_options]
asyncio_mode = "auto"
asyncio_default_fixture_loop_scope = "session"
asyncio_default_test_loop_scope = "session"
"""


def pytest_addoption(parser: pytest.Parser) -> None:
    """The ``jsflow_app`` ini option: the ``module:attr`` of the app ``jsflow_app`` binds."""
    parser.addini("jsflow_app", "MODULE:ATTR of the App the jsflow_app fixture binds", default="")


def pytest_configure(config: pytest.Config) -> None:
    """Refuse loop scopes under which every jsflow fixture would time out, naming the fix."""
    try:
        fixture = config.getini("asyncio_default_fixture_loop_scope") or "function"
        test = config.getini("asyncio_default_test_loop_scope") or "function"
    except ValueError:  # an older pytest-asyncio without these options
        return
    order = ["function", "class", "module", "package", "session"]
    if fixture in order and test in order and order.index(fixture) > order.index(test):
        raise pytest.UsageError(_LOOP_HINT.format(fixture=fixture, test=test))


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def jsflow_server() -> AsyncIterator[EmbeddedServer]:
    """One real nats-server with JetStream for the whole test session."""
    async with EmbeddedServer() as server:
        yield server


@pytest_asyncio.fixture
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


@asynccontextmanager
async def bound(app: App, client: Client) -> AsyncIterator[App]:
    """Bind ``app`` (a module-level one, say) to ``client`` in a namespace of its own for
    the block, then unbind it: its tasks, called as usual (``await send.submit(...)``), use
    subjects, durables and a state bucket no other test shares."""
    app.bind(client, scope=f"t{uuid.uuid4().hex[:12]}")
    try:
        yield app
    finally:
        app.unbind()


def _load_app(spec: str) -> App:
    module_name, _, attr = spec.partition(":")
    try:
        obj = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ConfigError(f"jsflow_app = {spec!r}: cannot load it ({exc})") from exc
    if not isinstance(obj, App):
        raise ConfigError(f"jsflow_app = {spec!r} is a {type(obj).__name__}, not an App")
    return obj


@pytest_asyncio.fixture
async def jsflow_app(request: pytest.FixtureRequest, jsflow_client: Client) -> AsyncIterator[App]:
    """The app of the ``jsflow_app`` ini option, bound in isolation for this test (override
    this fixture to provide another one)."""
    spec = str(request.config.getini("jsflow_app") or "")
    if not spec:
        raise ConfigError(
            'set jsflow_app = "module:attr" in [tool.pytest.ini_options], or override the '
            "jsflow_app fixture in your conftest.py"
        )
    async with bound(_load_app(spec), jsflow_client) as app:
        yield app


@pytest_asyncio.fixture
async def jsflow_worker(jsflow_app: App) -> AsyncIterator[Worker]:
    """A worker running every task of ``jsflow_app`` for the duration of the test."""
    worker: Any = jsflow_app.worker()
    async with worker:
        yield worker


@pytest.fixture
def jsflow_eager(jsflow_app: App) -> Iterator[App]:
    """``jsflow_app`` in eager mode for the test: its tasks run inline in ``submit``, with
    their state and events recorded through the server (see :mod:`jsflow.tasks.eager` for
    what differs from a worker: retry delays skipped, timed submits still queued, ...)."""
    with jsflow_app.eager():
        yield jsflow_app
