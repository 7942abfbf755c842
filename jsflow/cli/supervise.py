"""``jsflow worker --processes N`` and ``--reload``: the worker command run as child
processes under one supervisor.

Each child is the plain ``jsflow worker`` command (one process, one connection, its own
consumers' share of the work), so a supervised worker behaves exactly like one started by
hand. The supervisor:

* starts ``processes`` children and restarts one that exits on its own (a crash, a lost
  connection) after a backoff that grows while it keeps failing;
* with ``reload``, restarts every child gracefully when a ``.py`` file under the watched
  directory changes (``watchfiles``, the ``jsflow[reload]`` extra): for development;
* on SIGINT/SIGTERM stops every child gracefully (SIGTERM: each gives its running attempts
  ``grace`` seconds, then hands the rest back to the server), kills one that outlives that,
  and exits 0;
* with a ready file, writes it once every child has written its own (``PATH.<i>``) and
  removes it on exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from jsflow.backoff import Backoff
from jsflow.errors import ConfigError
from jsflow.observability import get_logger

__all__ = ["RESTART_BACKOFF", "Supervisor"]

_log = get_logger(__name__)

# The pause before restarting a child that exited on its own, after its n-th exit in a row
# (reset once a child ran for a minute).
RESTART_BACKOFF = Backoff(initial=0.5, maximum=30.0, jitter=0.2)
_HEALTHY_AFTER = 60.0
_KILL_MARGIN = 10.0  # seconds past the grace before a stopping child is killed


class Supervisor:
    """Runs ``argv`` (the arguments of one ``jsflow worker`` child) ``processes`` times.

    ``child_ready_file(i)`` gives the ready file of child ``i`` (``None``: no ready files).
    """

    def __init__(
        self,
        argv: Sequence[str],
        processes: int,
        *,
        reload: bool,
        grace: float,
        ready_file: str | None,
        watch_dir: Path,
        metrics_port: int | None = None,
    ) -> None:
        if processes < 1:
            raise ConfigError(f"--processes must be at least 1, got {processes}")
        self.argv = list(argv)
        self.processes = processes
        self.reload = reload
        self.grace = grace
        self.ready_file = Path(ready_file) if ready_file else None
        self.watch_dir = watch_dir
        self.metrics_port = metrics_port
        self._children: dict[int, asyncio.subprocess.Process] = {}
        self._stopping = asyncio.Event()
        self._reloading: set[int] = set()  # children stopped on purpose, to run new code
        if reload:
            self._watchfiles()  # fail at once when the extra is missing

    @staticmethod
    def _watchfiles() -> Any:
        try:
            return importlib.import_module("watchfiles")
        except ImportError as exc:
            raise ConfigError(
                f"--reload needs watchfiles ({exc}): pip install 'jsflow[reload]'"
            ) from exc

    def child_ready_file(self, index: int) -> Path | None:
        """Where child ``index`` says it is ready."""
        if self.ready_file is None:
            return None
        return self.ready_file.with_name(f"{self.ready_file.name}.{index}")

    def _child_argv(self, index: int) -> list[str]:
        argv = [*self.argv, "--grace", str(self.grace)]
        ready = self.child_ready_file(index)
        if ready is not None:
            argv += ["--ready-file", str(ready)]
        if self.metrics_port is not None:  # one port each: port, port + 1, ...
            argv += ["--metrics-port", str(self.metrics_port + index)]
        return argv

    async def _spawn(self, index: int) -> asyncio.subprocess.Process:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "jsflow.cli", *self._child_argv(index)
        )
        self._children[index] = proc
        _log.info("worker.child_started", child=index, pid=proc.pid)
        return proc

    async def _stop_child(self, proc: asyncio.subprocess.Process) -> None:
        if proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), self.grace + _KILL_MARGIN)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()

    async def _keep(self, index: int) -> None:
        """Child ``index``, restarted whenever it exits until the supervisor stops."""
        failures = 0
        loop = asyncio.get_running_loop()
        while not self._stopping.is_set():
            ready = self.child_ready_file(index)
            if ready is not None:
                ready.unlink(missing_ok=True)
            proc = await self._spawn(index)
            started = loop.time()
            code = await proc.wait()
            if self._stopping.is_set():
                return
            if index in self._reloading:
                self._reloading.discard(index)
                continue  # a reload: stopped on purpose, start the new code at once
            failures = 1 if loop.time() - started > _HEALTHY_AFTER else failures + 1
            delay = RESTART_BACKOFF.delay(failures)
            _log.warning("worker.child_exited", child=index, code=code, restart_in=round(delay, 2))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)

    async def _watch(self) -> None:
        watchfiles = self._watchfiles()
        async for changes in watchfiles.awatch(
            self.watch_dir, watch_filter=watchfiles.PythonFilter(), stop_event=self._stopping
        ):
            _log.info("worker.reloading", changed=sorted(str(p) for _, p in changes)[:10])
            self._reloading.update(self._children)
            await asyncio.gather(*(self._stop_child(p) for p in list(self._children.values())))

    async def _announce_ready(self) -> None:
        if self.ready_file is None:
            return
        while not self._stopping.is_set():
            files = [self.child_ready_file(i) for i in range(1, self.processes + 1)]
            if all(f is not None and f.exists() for f in files):
                self.ready_file.write_text(f"{self.processes} workers\n")
                return
            await asyncio.sleep(0.1)

    async def run(self) -> int:
        """Supervise until SIGINT or SIGTERM; then stop every child and return 0."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, self._stopping.set)
        keepers = [loop.create_task(self._keep(i)) for i in range(1, self.processes + 1)]
        helpers = [loop.create_task(self._announce_ready())]
        if self.reload:
            helpers.append(loop.create_task(self._watch()))
        try:
            await self._stopping.wait()
        finally:
            self._stopping.set()
            await asyncio.gather(*(self._stop_child(p) for p in list(self._children.values())))
            await asyncio.gather(*keepers, return_exceptions=True)
            for task in helpers:
                task.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)
            for i in range(1, self.processes + 1):
                ready = self.child_ready_file(i)
                if ready is not None:
                    ready.unlink(missing_ok=True)
            if self.ready_file is not None:
                self.ready_file.unlink(missing_ok=True)
        return 0
