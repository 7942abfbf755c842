"""The Starlette application: HTTP commands, server-sent events, health, metrics and the
monitor page, each a thin translation of a :class:`~jsflow.web.gateway.Gateway` call."""

from __future__ import annotations

import contextlib
import html
import inspect
import json
from collections.abc import AsyncIterator, Iterable, Sequence
from pathlib import Path

from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from jsflow.client import Client
from jsflow.errors import ConfigError, ConnectionClosedError, JsflowError, PayloadTooLargeError
from jsflow.observability import get_logger, prometheus_text
from jsflow.tasks.app import App
from jsflow.tasks.events import TaskEvents
from jsflow.tasks.streams import validate_name
from jsflow.web.encode import dead_letter_json, event_json, info_json, task_urls
from jsflow.web.errors import BadRequestError, error_body, status_for
from jsflow.web.gateway import DEAD_LETTER_STATUSES, Gateway

__all__ = ["create_app"]

STATIC_DIR = Path(__file__).resolve().parent / "static"
_MAX_BODY = 8 * 1024 * 1024  # bytes of a request body read at most
_MAX_SEQ = 2**63 - 1
_log = get_logger(__name__)


def _root(request: Request) -> str:
    """The prefix the gateway is mounted under (``""`` at the top)."""
    return str(request.scope.get("root_path", "")).rstrip("/")


def _int_param(request: Request, name: str, default: int, *, minimum: int = 0) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    if not raw.isdigit() or len(raw) > 19 or int(raw) < minimum or int(raw) > _MAX_SEQ:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {raw[:40]!r}")
    return int(raw)


def _list_param(request: Request, name: str) -> list[str]:
    """A query parameter given repeatedly or comma-separated (``?status=A,B&status=C``)."""
    return [p.strip() for raw in request.query_params.getlist(name) for p in raw.split(",")]


def _after(request: Request) -> int:
    """Where an event stream resumes: the ``Last-Event-ID`` header, else ``?after=``."""
    raw = request.headers.get("last-event-id")
    if raw is None or raw.strip() == "":
        return _int_param(request, "after", 0)
    raw = raw.strip()
    if not raw.isdigit() or len(raw) > 19 or int(raw) > _MAX_SEQ:
        raise BadRequestError(f"Last-Event-ID must be a stream sequence, got {raw[:40]!r}")
    return int(raw)


async def _json_body(request: Request) -> object:
    """The request body as JSON (``None`` when empty), at most 8 MiB."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > _MAX_BODY:
            raise PayloadTooLargeError(f"request body over {_MAX_BODY} bytes")
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw.strip():
        return None
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequestError(f"the body is not JSON: {exc}") from None


def _prometheus_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class _Endpoints:
    """The route handlers, bound to one gateway."""

    def __init__(self, gateway: Gateway) -> None:
        self.gw = gateway
        self._index = (STATIC_DIR / "index.html").read_text(encoding="utf-8")

    # -- health ----------------------------------------------------------------------------

    async def healthz(self, request: Request) -> Response:
        """``GET /healthz``: the process is alive (no I/O)."""
        return JSONResponse({"status": "ok"})

    async def readyz(self, request: Request) -> Response:
        """``GET /readyz``: 200 when the gateway can serve, else 503 naming what is not."""
        ready, checks = await self.gw.readiness()
        return JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)

    async def metrics(self, request: Request) -> Response:
        """``GET /metrics``: queue gauges per task and the gateway's open streams, in the
        Prometheus text format."""
        queues = await self.gw.queues()
        lines = []
        gauges = (
            ("pending", "requests not yet delivered to a worker (consumer lag)"),
            ("running", "requests delivered and not yet acknowledged"),
            ("redelivered", "requests delivered more than once, not yet acknowledged"),
            ("waiting", "idle pull requests of workers"),
        )
        for field, text in gauges:
            metric = f"jsflow_task_queue_{field}"
            lines += [f"# HELP {metric} Task {text}.", f"# TYPE {metric} gauge"]
            for q in queues:
                labels = (
                    f'app="{_prometheus_label(q["app"])}",task="{_prometheus_label(q["name"])}"'
                )
                lines.append(f"{metric}{{{labels}}} {q[field]}")
        lines += [
            "# HELP jsflow_gateway_task_event_streams Open GET /tasks/{id}/events streams.",
            "# TYPE jsflow_gateway_task_event_streams gauge",
            f"jsflow_gateway_task_event_streams {self.gw.sse_clients}",
            "# HELP jsflow_gateway_firehose_clients Open GET /events streams.",
            "# TYPE jsflow_gateway_firehose_clients gauge",
            f"jsflow_gateway_firehose_clients {self.gw.firehose.subscriber_count}",
        ]
        # jsflow's OpenTelemetry instruments, when this process exports them to Prometheus
        # (jsflow.observability.enable_prometheus, `jsflow serve --metrics`).
        text = "\n".join(lines) + "\n" + prometheus_text()
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4")

    # -- apps and tasks --------------------------------------------------------------------

    async def apps(self, request: Request) -> Response:
        """``GET /apps``: the apps and the tasks (with signatures) this gateway can submit."""
        await self.gw.start()
        return JSONResponse(
            {
                "apps": [
                    {
                        "name": app.name,
                        "namespace": app.scope,
                        "tasks": [
                            {
                                "name": name,
                                "signature": str(inspect.signature(fn.fn)),
                                "retries": fn.options.retries,
                                "timeout": fn.options.timeout,
                            }
                            for name, fn in sorted(app.tasks.items())
                        ],
                    }
                    for app in self.gw.apps.values()
                ]
            }
        )

    async def submit(self, request: Request) -> Response:
        """``POST /tasks/{name}``: submit; 201 with the id and the URLs of its state and
        events."""
        name = request.path_params["name"]
        validate_name(name)
        body = await _json_body(request)
        app, task_id = await self.gw.submit(name, body, request.query_params.get("app"))
        urls = task_urls(_root(request), task_id)
        return JSONResponse(
            {"id": task_id, "name": name, "app": app.name, "urls": urls},
            status_code=201,
            headers={"Location": urls["self"]},
        )

    async def task(self, request: Request) -> Response:
        """``GET /tasks/{id}``: state, attempts, progress, arguments, result or error."""
        found = await self.gw.find(request.path_params["task_id"], request.query_params.get("app"))
        return JSONResponse(await self.gw.detail(found, _root(request)))

    async def tasks(self, request: Request) -> Response:
        """``GET /tasks?name=&status=&app=&limit=&cursor=``: a page, newest first."""
        return await self._page(request, _list_param(request, "status"))

    async def dead_tasks(self, request: Request) -> Response:
        """``GET /dead-letters/tasks``: the ``FAILED`` and ``DEAD`` tasks, newest first."""
        return await self._page(request, [s.value for s in DEAD_LETTER_STATUSES])

    async def _page(self, request: Request, statuses: Sequence[str]) -> Response:
        page = await self.gw.tasks(
            app=request.query_params.get("app"),
            names=_list_param(request, "name"),
            statuses=statuses,
            limit=_int_param(request, "limit", 50, minimum=1),
            cursor=request.query_params.get("cursor") or None,
        )
        root = _root(request)
        return JSONResponse(
            {
                "tasks": [info_json(info, app, root) for app, info in page.items],
                "next_cursor": page.next_cursor,
                "total": page.total,
            }
        )

    async def cancel(self, request: Request) -> Response:
        """``POST /tasks/{id}/cancel``: ``cancelled`` is false when it had finished."""
        task_id = request.path_params["task_id"]
        found, done = await self.gw.cancel(task_id, request.query_params.get("app"))
        after = await self.gw.find(task_id, found.app.scope)
        return JSONResponse({"id": task_id, "cancelled": done, "status": after.info.status.value})

    async def replay(self, request: Request) -> Response:
        """``POST /tasks/{id}/replay``: run a failed or dead task again (409 otherwise)."""
        task_id = request.path_params["task_id"]
        found = await self.gw.replay(task_id, request.query_params.get("app"))
        after = await self.gw.find(task_id, found.app.scope)
        return JSONResponse(
            {
                "id": task_id,
                "replayed": True,
                "status": after.info.status.value,
                "urls": task_urls(_root(request), task_id),
            }
        )

    # -- event streams ---------------------------------------------------------------------

    async def task_events(self, request: Request) -> Response:
        """``GET /tasks/{id}/events``: the task's events as SSE, each with its stream
        sequence as ``id:``; resumes after ``Last-Event-ID``; ends after the terminal one
        (204 for a client resuming after it, so EventSource stops reconnecting)."""
        after = _after(request)
        found = await self.gw.find(request.path_params["task_id"], request.query_params.get("app"))
        if after and await self.gw.ended_at(found, after):
            return Response(status_code=204)
        backend = await found.app.backend()
        events = TaskEvents(
            backend.client,
            found.info.id,
            name=found.info.name,
            app=backend.app,
            after_seq=after,
        )
        return EventSourceResponse(
            self._task_stream(events, found.app.name), ping=self.gw.keepalive
        )

    async def _task_stream(self, events: TaskEvents, app: str) -> AsyncIterator[ServerSentEvent]:
        self.gw.sse_clients += 1
        try:
            async with events:
                async for event in events:
                    yield ServerSentEvent(
                        data=json.dumps(event_json(event, app)), id=str(event.seq)
                    )
        except ConnectionClosedError:
            return
        except JsflowError as exc:
            yield ServerSentEvent(
                event="error", data=json.dumps(error_body(type(exc).__name__, str(exc)))
            )
        finally:
            self.gw.sse_clients -= 1

    async def firehose(self, request: Request) -> Response:
        """``GET /events?name=&app=``: every task event of the gateway's apps as it
        happens (live only, no ``id:``; ``event: lagged`` when a slow client lost some)."""
        await self.gw.start()
        names = [n for n in _list_param(request, "name") if n]
        for name in names:
            validate_name(name)
        apps = self.gw.apps_for(request.query_params.get("app"))
        return EventSourceResponse(
            self._firehose_stream(apps, frozenset(names)), ping=self.gw.keepalive
        )

    async def _firehose_stream(
        self, apps: Iterable[App], names: frozenset[str]
    ) -> AsyncIterator[ServerSentEvent]:
        by_scope = {a.scope: a.name for a in apps}
        try:
            subscriber = await self.gw.firehose.join(apps=frozenset(by_scope), names=names)
        except JsflowError as exc:
            yield ServerSentEvent(
                event="error", data=json.dumps(error_body(type(exc).__name__, str(exc)))
            )
            return
        try:
            yield ServerSentEvent(event="ready", data=json.dumps({"apps": sorted(by_scope)}))
            while True:
                items, dropped = await subscriber.next()
                if dropped:
                    yield ServerSentEvent(event="lagged", data=json.dumps({"dropped": dropped}))
                for item in items:
                    data = event_json(item.event, by_scope.get(item.app, item.app))
                    yield ServerSentEvent(data=json.dumps(data))
        except ConnectionClosedError:
            return
        finally:
            subscriber.close()

    # -- queues, workers, flows ------------------------------------------------------------

    async def queues(self, request: Request) -> Response:
        """``GET /queues``: per task name, pending (lag), running, redelivered, waiting."""
        return JSONResponse({"queues": await self.gw.queues(request.query_params.get("app"))})

    async def workers(self, request: Request) -> Response:
        """``GET /workers``: the workers running tasks now, with what they run."""
        return JSONResponse({"workers": await self.gw.workers(request.query_params.get("app"))})

    async def flows(self, request: Request) -> Response:
        """``GET /flows``: the user streams, their consumers' lag, which hold dead letters."""
        await self.gw.start()
        return JSONResponse({"streams": await self.gw.flows.flows()})

    async def dead_streams(self, request: Request) -> Response:
        """``GET /dead-letters/flows``: the streams holding flow dead letters."""
        await self.gw.start()
        return JSONResponse({"streams": await self.gw.flows.dead_letter_streams()})

    async def dead_messages(self, request: Request) -> Response:
        """``GET /dead-letters/flows/{stream}?after=&limit=``: dead letters by sequence."""
        await self.gw.start()
        stream = request.path_params["stream"]
        msgs, next_after = await self.gw.flows.list(
            stream,
            _int_param(request, "after", 0),
            _int_param(request, "limit", 50, minimum=1),
        )
        return JSONResponse(
            {
                "stream": stream,
                "messages": [dead_letter_json(m, preview=512) for m in msgs],
                "next_after": next_after or None,
            }
        )

    async def dead_message(self, request: Request) -> Response:
        """``GET /dead-letters/flows/{stream}/{seq}``: one dead letter, headers and body."""
        await self.gw.start()
        msg = await self.gw.flows.get(request.path_params["stream"], request.path_params["seq"])
        return JSONResponse(dead_letter_json(msg))

    async def dead_replay(self, request: Request) -> Response:
        """``POST /dead-letters/flows/{stream}/{seq}/replay[?keep=true]``: republish it to
        its original subject (then remove it, unless kept)."""
        await self.gw.start()
        keep = request.query_params.get("keep", "").lower() in ("1", "true", "yes")
        result = await self.gw.flows.replay(
            request.path_params["stream"], request.path_params["seq"], keep=keep
        )
        return JSONResponse(result)

    # -- the monitor -----------------------------------------------------------------------

    async def index(self, request: Request) -> Response:
        """``GET /``: the monitor page (static assets shipped in the package)."""
        base = html.escape(_root(request) + "/", quote=True)
        page = self._index.replace("{{BASE}}", base)
        return HTMLResponse(page, headers={"Cache-Control": "no-store"})


async def _jsflow_error(request: Request, exc: Exception) -> Response:
    status = status_for(exc)
    if status >= 500:
        _log.warning("web.request_failed", path=request.url.path, error=repr(exc))
    return JSONResponse(error_body(type(exc).__name__, str(exc)), status_code=status)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    kind = {404: "NotFound", 405: "MethodNotAllowed"}.get(exc.status_code, "HTTPError")
    return JSONResponse(
        error_body(kind, str(exc.detail)), status_code=exc.status_code, headers=exc.headers
    )


async def _internal_error(request: Request, exc: Exception) -> Response:
    _log.error("web.internal_error", path=request.url.path, error=repr(exc))
    return JSONResponse(
        error_body("InternalError", f"{type(exc).__name__} while serving the request"),
        status_code=500,
    )


def create_app(
    client_or_url: Client | str | Sequence[str],
    apps: Iterable[App] = (),
    *,
    dead_letter_streams: Iterable[str] = (),
    keepalive: float = 15.0,
    require_consumers: bool = True,
) -> Starlette:
    """The gateway and monitor as an ASGI application (a :class:`starlette.applications.
    Starlette`, mountable in FastAPI or Starlette).

    ``client_or_url``: a :class:`jsflow.Client` the caller owns, or a server URL (or list)
    that the app connects to on startup and closes on shutdown (its lifespan; mounted where
    the lifespan does not run, it connects on its first request). ``apps``: the
    :class:`jsflow.App` objects whose tasks it serves (an unbound app is bound to the
    gateway's client); none means the default app, for inspecting tasks without their
    code. ``dead_letter_streams``: streams of flow dead letters to list even before their
    first message. ``keepalive``: seconds between keep-alive comments on idle event
    streams. ``require_consumers``: whether ``/readyz`` waits for every app task's durable
    consumer (created by a worker). The :class:`Gateway` is ``app.state.gateway``.
    """
    gateway = Gateway(
        client_or_url,
        apps,
        dead_letter_streams=dead_letter_streams,
        keepalive=keepalive,
        require_consumers=require_consumers,
    )
    ep = _Endpoints(gateway)
    task = "/tasks/{task_id:path}"
    routes = [
        Route("/", ep.index, methods=["GET"]),
        Mount("/static", app=StaticFiles(directory=STATIC_DIR), name="static"),
        Route("/healthz", ep.healthz, methods=["GET"]),
        Route("/readyz", ep.readyz, methods=["GET"]),
        Route("/metrics", ep.metrics, methods=["GET"]),
        Route("/apps", ep.apps, methods=["GET"]),
        Route("/tasks", ep.tasks, methods=["GET"]),
        Route(f"{task}/events", ep.task_events, methods=["GET"]),
        Route(f"{task}/cancel", ep.cancel, methods=["POST"]),
        Route(f"{task}/replay", ep.replay, methods=["POST"]),
        Route("/tasks/{name}", ep.submit, methods=["POST"]),
        Route(task, ep.task, methods=["GET"]),
        Route("/events", ep.firehose, methods=["GET"]),
        Route("/queues", ep.queues, methods=["GET"]),
        Route("/workers", ep.workers, methods=["GET"]),
        Route("/flows", ep.flows, methods=["GET"]),
        Route("/dead-letters/tasks", ep.dead_tasks, methods=["GET"]),
        Route("/dead-letters/flows", ep.dead_streams, methods=["GET"]),
        Route("/dead-letters/flows/{stream}", ep.dead_messages, methods=["GET"]),
        Route("/dead-letters/flows/{stream}/{seq:int}", ep.dead_message, methods=["GET"]),
        Route("/dead-letters/flows/{stream}/{seq:int}/replay", ep.dead_replay, methods=["POST"]),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        await gateway.start()
        try:
            yield
        finally:
            await gateway.aclose()

    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={
            JsflowError: _jsflow_error,
            HTTPException: _http_error,
            Exception: _internal_error,
        },
    )
    app.state.gateway = gateway
    return app
