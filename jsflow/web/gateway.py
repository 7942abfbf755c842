"""``Gateway``: what the HTTP endpoints do, on one connection and a set of apps.

It owns (or borrows) the client, binds the apps, and carries out every command: submit,
read, list, cancel and replay tasks; queues, workers and readiness; the firehose and the
flows' dead letters. The Starlette routes (:mod:`jsflow.web.routes`) only translate HTTP.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import time
from collections import Counter as Tally
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from jsflow._js import js_errors, map_nats_errors
from jsflow._validate import check_id, shorten
from jsflow.client import Client, connect
from jsflow.errors import (
    CodecError,
    ConfigError,
    JsflowError,
    TaskNotFoundError,
)
from jsflow.flow.monitor import FlowMonitor
from jsflow.tasks.app import App, TaskFunction
from jsflow.tasks.events import TERMINAL_EVENTS, TaskEvent
from jsflow.tasks.firehose import Firehose
from jsflow.tasks.state import TaskInfo
from jsflow.tasks.status import TaskStatus
from jsflow.tasks.streams import TASK_STREAM, event_subject, split_token, task_token
from jsflow.tasks.worker import durable_name
from jsflow.web.encode import decode_cursor, encode_cursor, info_json, jsonable
from jsflow.web.errors import (
    AmbiguousTaskError,
    BadRequestError,
    InvalidArgumentsError,
    NotReplayableError,
    UnknownAppError,
    UnknownTaskError,
)

__all__ = ["DEAD_LETTER_STATUSES", "Found", "Gateway", "Page", "SubmitRequest"]

DEAD_LETTER_STATUSES = (TaskStatus.FAILED, TaskStatus.DEAD)
_DURABLE_PREFIX = "jsflow_task_"
_SUBMIT_KEYS = frozenset({"args", "kwargs", "task_id", "depends_on"})
MAX_LIMIT = 1000


@dataclass(frozen=True, slots=True)
class SubmitRequest:
    """A checked submit body: ``{"args": [...], "kwargs": {...}, "task_id"?, "depends_on"?}``."""

    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    task_id: str | None
    depends_on: tuple[str, ...]

    @classmethod
    def parse(cls, body: object) -> SubmitRequest:
        """Check the shape of a decoded JSON body (:class:`BadRequestError` naming what is
        wrong); ids are checked as ids (:class:`InvalidNameError`)."""
        if body is None:
            body = {}
        if not isinstance(body, dict):
            raise BadRequestError(f"the body must be a JSON object, got {type(body).__name__}")
        unknown = sorted(set(body) - _SUBMIT_KEYS)
        if unknown:
            raise BadRequestError(f"unknown field(s) {unknown} (expected {sorted(_SUBMIT_KEYS)})")
        args = body.get("args", [])
        kwargs = body.get("kwargs", {})
        task_id = body.get("task_id")
        deps = body.get("depends_on", [])
        if not isinstance(args, list):
            raise BadRequestError(f"args must be a JSON array, got {type(args).__name__}")
        if not isinstance(kwargs, dict):
            raise BadRequestError(f"kwargs must be a JSON object, got {type(kwargs).__name__}")
        if task_id is not None:
            check_id("task_id", task_id)
        if not isinstance(deps, list):
            raise BadRequestError(f"depends_on must be a JSON array, got {type(deps).__name__}")
        return cls(
            tuple(args),
            dict(kwargs),
            task_id,
            tuple(check_id("depends_on id", d) for d in deps),
        )


@dataclass(frozen=True, slots=True)
class Found:
    """A task found in one of the gateway's apps: the app and its state entry."""

    app: App
    state: Any  # the TaskState protobuf
    revision: int

    @property
    def info(self) -> TaskInfo:
        """The state as a :class:`TaskInfo`."""
        return TaskInfo.from_state(self.state, self.revision)


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a task listing, newest first."""

    items: list[tuple[str, TaskInfo]]
    next_cursor: str | None
    total: int


def _parse_statuses(values: Iterable[str]) -> tuple[TaskStatus, ...]:
    out = []
    for raw in values:
        for piece in raw.split(","):
            part = piece.strip().upper()
            if not part:
                continue
            try:
                out.append(TaskStatus(part))
            except ValueError:
                allowed = ", ".join(s.value for s in TaskStatus)
                raise ConfigError(
                    f"status {shorten(part)} is not a task status ({allowed})"
                ) from None
    return tuple(dict.fromkeys(out))


class Gateway:
    """The gateway's state: a client (connected from a URL, or one the caller owns) and the
    apps whose tasks it serves.

    Task names are looked up in the apps in order (``?app=`` picks one when several define
    a name); task ids are looked up in every app's state bucket. ``dead_letter_streams``
    names streams that hold flow dead letters (others are recognised by their messages).
    ``require_consumers``: whether readiness needs every app task's durable consumer to
    exist (bound by a worker).
    """

    def __init__(
        self,
        client_or_url: Client | str | Sequence[str],
        apps: Iterable[App] = (),
        *,
        dead_letter_streams: Iterable[str] = (),
        keepalive: float = 15.0,
        require_consumers: bool = True,
    ) -> None:
        if isinstance(client_or_url, Client):
            self._url: str | list[str] | None = None
            self._client: Client | None = client_or_url
        elif isinstance(client_or_url, str) or (
            isinstance(client_or_url, list | tuple)
            and all(isinstance(u, str) for u in client_or_url)
        ):
            self._url = client_or_url if isinstance(client_or_url, str) else list(client_or_url)
            self._client = None
        else:
            raise ConfigError(
                f"create_app needs a Client or a server URL, got {type(client_or_url).__name__}"
            )
        self.apps: dict[str, App] = {}
        for app in apps:
            if not isinstance(app, App):
                raise ConfigError(f"apps must be jsflow App objects, got {type(app).__name__}")
            if app.scope in self.apps:
                raise ConfigError(f"two apps of the gateway share the namespace {app.scope!r}")
            self.apps[app.scope] = app
        if not self.apps:
            self.apps["default"] = App(None, "default")
        if isinstance(keepalive, bool) or not isinstance(keepalive, int | float):
            raise ConfigError(f"keepalive must be a number of seconds, got {keepalive!r}")
        if not 0 < keepalive <= 3600:
            raise ConfigError(f"keepalive must be within (0, 3600] seconds, got {keepalive}")
        self.keepalive = float(keepalive)
        self.require_consumers = bool(require_consumers)
        self._dead_letter_streams = tuple(dead_letter_streams)
        FlowMonitor.check_names(self._dead_letter_streams)
        self._firehose: Firehose | None = None
        self._flows: FlowMonitor | None = None
        self._lock = asyncio.Lock()
        self._started = False
        self.sse_clients = 0  # task event streams open now

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def client(self) -> Client:
        """The gateway's client (:class:`ConfigError` before :meth:`start`)."""
        if self._client is None:
            raise ConfigError("the gateway is not started: no client yet")
        return self._client

    @property
    def firehose(self) -> Firehose:
        """The one live subscription every ``GET /events`` client shares."""
        if self._firehose is None:
            raise ConfigError("the gateway is not started")
        return self._firehose

    @property
    def flows(self) -> FlowMonitor:
        """Streams and dead letters of flows."""
        if self._flows is None:
            raise ConfigError("the gateway is not started")
        return self._flows

    async def start(self) -> None:
        """Connect (when given a URL), bind the apps and open their task backends.

        Idempotent: every request calls it, so a gateway mounted where its lifespan does
        not run starts on its first request.
        """
        if self._started:
            return
        async with self._lock:
            if self._started:
                return
            if self._client is None:
                assert self._url is not None
                self._client = await connect(self._url)
            client = self._client
            for app in self.apps.values():
                if app.client is None:
                    app.bind(client)
            await asyncio.gather(*(app.backend() for app in self.apps.values()))
            self._firehose = Firehose(client)
            self._flows = FlowMonitor(client, self._dead_letter_streams, exclude=(TASK_STREAM,))
            self._started = True

    async def aclose(self) -> None:
        """Drop the firehose and close the client when the gateway connected it."""
        if self._firehose is not None:
            await self._firehose.aclose()
        if self._url is not None and self._client is not None:
            await self._client.close()
            self._client = None
        self._started = False

    # -- apps and tasks --------------------------------------------------------------------

    def apps_for(self, app: str | None) -> list[App]:
        """The apps a request is about: the one named ``app`` (by name or namespace), or all."""
        if app is None or app == "":
            return list(self.apps.values())
        for candidate in self.apps.values():
            if app in (candidate.name, candidate.scope):
                return [candidate]
        known = ", ".join(sorted(a.name for a in self.apps.values()))
        raise UnknownAppError(f"the gateway serves no app {shorten(app)} (apps: {known})")

    def task_function(self, name: str, app: str | None = None) -> TaskFunction[Any, Any]:
        """The task function called ``name`` (:class:`UnknownTaskError` when no app defines
        it, :class:`AmbiguousTaskError` when several do and ``app`` does not pick one)."""
        found = [a.tasks[name] for a in self.apps_for(app) if name in a.tasks]
        if not found:
            known = sorted({n for a in self.apps_for(app) for n in a.tasks})
            listed = ", ".join(known[:50]) or "none"
            raise UnknownTaskError(
                f"no task named {shorten(name)} in this gateway (tasks: {listed})"
            )
        if len(found) > 1:
            apps = ", ".join(sorted(fn.app.name for fn in found))
            raise AmbiguousTaskError(
                f"task {shorten(name)} is defined by the apps {apps}: add ?app=<name>"
            )
        return found[0]

    async def submit(self, name: str, body: object, app: str | None = None) -> tuple[App, str]:
        """Submit task ``name`` with a JSON body; returns its app and id.

        The body's shape and the arguments' fit to the function's signature are checked
        before any I/O (:class:`BadRequestError`, :class:`InvalidArgumentsError`).
        """
        fn = self.task_function(name, app)
        request = SubmitRequest.parse(body)
        try:
            inspect.signature(fn.fn).bind(*request.args, **request.kwargs)
        except TypeError as exc:
            raise InvalidArgumentsError(
                f"arguments do not fit task {name!r}{inspect.signature(fn.fn)}: {exc}"
            ) from None
        await self.start()
        try:
            handle = await fn.submit_with(
                request.args,
                request.kwargs,
                task_id=request.task_id,
                depends_on=list(request.depends_on) or None,
            )
        except TaskNotFoundError as exc:
            if request.depends_on:  # a dependency that does not exist: the body is wrong
                raise InvalidArgumentsError(f"depends_on: {exc}") from exc
            raise
        owner = next(a for a in self.apps.values() if a.tasks.get(name) is fn)
        return owner, handle.id

    async def find(self, task_id: str, app: str | None = None) -> Found:
        """The task ``task_id`` in the first app (in order) that has it, else
        :class:`TaskNotFoundError`."""
        check_id("task id", task_id)
        await self.start()
        apps = self.apps_for(app)
        backends = [await a.backend() for a in apps]
        entries = await asyncio.gather(*(b.store.store.get(task_id) for b in backends))
        for owner, entry in zip(apps, entries, strict=True):
            if entry is not None:
                return Found(owner, entry.value, entry.revision)
        raise TaskNotFoundError(task_id)

    async def detail(self, found: Found, root: str) -> dict[str, Any]:
        """Everything the gateway knows of one task: its state, latest progress, arguments
        and result (decoded with the task's codec when this gateway has its function)."""
        state = found.state
        info = found.info
        out = info_json(info, found.app.name, root)
        backend = await found.app.backend()
        fn = found.app.tasks.get(info.name)
        traceback = str(getattr(state, "traceback", "") or "")  # recorded by newer workers
        if out["error"] is not None:
            out["error"]["traceback"] = traceback or None
        out["dependents"] = list(state.dependents)
        out["replays"] = state.replays
        out["progress"] = await self._progress(found.app, info)
        out["args"], out["kwargs"] = None, None
        if fn is not None and not state.args_ref and state.args:
            try:
                args, kwargs = fn.codec.decode_args(bytes(state.args))
                out["args"], out["kwargs"] = jsonable(list(args)), jsonable(kwargs)
            except CodecError:
                pass
        out["result"] = None
        if info.status is TaskStatus.SUCCEEDED:
            data = bytes(state.result)
            if state.result_ref:
                data = await backend.artifacts.get(state.result_ref)
            out["result"] = self._decode_result(fn, data)
        return out

    @staticmethod
    def _decode_result(fn: TaskFunction[Any, Any] | None, data: bytes) -> Any:
        if not data:
            return None
        try:
            if fn is None:
                return json.loads(data)
            return jsonable(fn.codec.decode_result(data))
        except (CodecError, ValueError):
            return {"undecoded": jsonable(data)}

    async def _progress(self, app: App, info: TaskInfo) -> dict[str, Any] | None:
        """The task's latest progress report: one get of the last message on its progress
        subject (the server indexes subjects)."""
        backend = await app.backend()
        subject = event_subject("progress", task_token(backend.app, info.name), info.id)
        with map_nats_errors(subject=subject):
            try:
                raw = await backend.client.js.get_msg(TASK_STREAM, subject=subject, direct=True)
            except js_errors.NotFoundError:
                return None
        try:
            event = TaskEvent.from_bytes(bytes(raw.data or b""))
        except CodecError:
            return None
        return {
            "percent": event.progress,
            "message": event.message,
            "attempt": event.attempt,
            "seq": int(raw.seq or 0),
            "time": event.time or None,
        }

    async def tasks(
        self,
        *,
        app: str | None = None,
        names: Sequence[str] = (),
        statuses: Sequence[str] = (),
        limit: int = 50,
        cursor: str | None = None,
    ) -> Page:
        """One page of the tasks of the apps (newest first), read with one server-side pass
        per app's state bucket (:meth:`TaskStore.snapshot`), filtered by name and status."""
        wanted = _parse_statuses(statuses)
        after = decode_cursor(cursor) if cursor else None
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
            raise ConfigError(f"limit must be an integer within 1..{MAX_LIMIT}, got {limit!r}")
        await self.start()
        apps = self.apps_for(app)
        backends = [await a.backend() for a in apps]
        snapshots = await asyncio.gather(*(b.store.snapshot() for b in backends))
        name_set = frozenset(n for n in names if n)
        rows = [
            (owner.name, info)
            for owner, snapshot in zip(apps, snapshots, strict=True)
            for info in snapshot
            if (not name_set or info.name in name_set) and (not wanted or info.status in wanted)
        ]
        rows.sort(key=lambda r: (r[1].created_at, r[1].id), reverse=True)
        total = len(rows)
        if after is not None:
            rows = [r for r in rows if (r[1].created_at, r[1].id) < after]
        page = rows[:limit]
        more = len(rows) > limit
        next_cursor = encode_cursor(page[-1][1].created_at, page[-1][1].id) if more else None
        return Page(page, next_cursor, total)

    async def cancel(self, task_id: str, app: str | None = None) -> tuple[Found, bool]:
        """Cancel the task; ``False`` when it had already finished."""
        found = await self.find(task_id, app)
        backend = await found.app.backend()
        return found, await backend.cancel(task_id)

    async def replay(self, task_id: str, app: str | None = None) -> Found:
        """Run a ``FAILED`` or ``DEAD`` task again (:class:`NotReplayableError` otherwise)."""
        found = await self.find(task_id, app)
        backend = await found.app.backend()
        if not await backend.replay(task_id):
            status = (await self.find(task_id, found.app.scope)).info.status
            raise NotReplayableError(
                f"task {task_id!r} is {status.value}: only FAILED and DEAD tasks are replayed"
            )
        return found

    async def ended_at(self, found: Found, seq: int) -> bool:
        """Whether the message at stream sequence ``seq`` is the task's terminal event (a
        client that saw the end reconnected with it as ``Last-Event-ID``)."""
        backend = await found.app.backend()
        with map_nats_errors(subject=TASK_STREAM):
            try:
                raw = await backend.client.js.get_msg(TASK_STREAM, seq=seq, direct=True)
            except js_errors.NotFoundError:
                return False
        parts = (raw.subject or "").split(".", 3)
        return (
            len(parts) == 4
            and parts[1] in TERMINAL_EVENTS
            and parts[3] == found.info.id
            and split_token(parts[2])[0] == backend.app
        )

    # -- queues, workers, readiness --------------------------------------------------------

    async def _task_consumers(self) -> dict[tuple[str, str], Any]:
        """The durable consumers of the tasks stream by ``(app namespace, task name)``."""
        client = self.client
        found: dict[tuple[str, str], Any] = {}
        with map_nats_errors(subject=TASK_STREAM):
            offset = 0
            while True:
                try:
                    page = await client.js.consumers_info(TASK_STREAM, offset=offset)
                except js_errors.NotFoundError:
                    return found
                for info in page:
                    name = info.name or ""
                    if name.startswith(_DURABLE_PREFIX):
                        scope, task = split_token(name[len(_DURABLE_PREFIX) :])
                        found[(scope, task)] = info
                if len(page) < 256:
                    return found
                offset += len(page)

    async def queues(self, app: str | None = None) -> list[dict[str, Any]]:
        """Per task name: the queue behind its durable consumer (``pending``: requests not
        yet delivered, the consumer's lag; ``running``: delivered, not yet acked;
        ``waiting``: idle pull requests of workers)."""
        await self.start()
        consumers = await self._task_consumers()
        out = []
        for owner in self.apps_for(app):
            names = set(owner.tasks) | {t for (s, t) in consumers if s == owner.scope}
            for name in sorted(names):
                info = consumers.get((owner.scope, name))
                out.append(
                    {
                        "app": owner.name,
                        "name": name,
                        "consumer": durable_name(name, owner.scope),
                        "bound": info is not None,
                        "known": name in owner.tasks,
                        "pending": (info.num_pending or 0) if info else 0,
                        "running": (info.num_ack_pending or 0) if info else 0,
                        "redelivered": (info.num_redelivered or 0) if info else 0,
                        "waiting": (info.num_waiting or 0) if info else 0,
                        "lag": (info.num_pending or 0) if info else 0,
                    }
                )
        return out

    async def workers(self, app: str | None = None) -> list[dict[str, Any]]:
        """The workers running tasks now (from the tasks' states: who runs each attempt)."""
        await self.start()
        apps = self.apps_for(app)
        backends = [await a.backend() for a in apps]
        snapshots = await asyncio.gather(*(b.store.snapshot() for b in backends))
        running: dict[tuple[str, str], Tally[str]] = {}
        for owner, snapshot in zip(apps, snapshots, strict=True):
            for info in snapshot:
                if info.status is TaskStatus.RUNNING and info.worker:
                    running.setdefault((owner.name, info.worker), Tally())[info.name] += 1
        return [
            {"worker": worker, "app": app_name, "running": sum(t.values()), "tasks": dict(t)}
            for (app_name, worker), t in sorted(running.items())
        ]

    async def readiness(self) -> tuple[bool, dict[str, Any]]:
        """Whether the gateway can serve: the server reachable, JetStream answering, and
        (``require_consumers``) every app task's durable consumer bound."""
        checks: dict[str, Any] = {}
        try:
            async with asyncio.timeout(5.0):
                await self.start()
        except (JsflowError, TimeoutError) as exc:
            checks["server"] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            return False, checks
        client = self.client
        checks["server"] = {"ok": client.is_connected}
        if not client.is_connected:
            return False, checks
        started = time.perf_counter()
        try:
            with map_nats_errors(subject="$JS.API.INFO"):
                await client.js.account_info()
            checks["jetstream"] = {
                "ok": True,
                "ms": round((time.perf_counter() - started) * 1000, 2),
            }
        except JsflowError as exc:
            checks["jetstream"] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            return False, checks
        try:
            consumers = await self._task_consumers()
        except JsflowError as exc:
            checks["consumers"] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            return False, checks
        wanted = [
            durable_name(name, owner.scope)
            for owner in self.apps.values()
            for name in owner.tasks
            if (owner.scope, name) not in consumers
        ]
        bound = sorted(
            durable_name(task, scope) for (scope, task) in consumers if scope in self.apps
        )
        ok = not wanted or not self.require_consumers
        checks["consumers"] = {"ok": ok, "bound": bound, "missing": sorted(wanted)}
        return ok, checks
