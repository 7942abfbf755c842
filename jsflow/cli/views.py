"""The read-only commands of ``jsflow``: tasks, events, schedules, workers, KV buckets.

Human output by default (a table with a header, local times, durations), ``--json`` for
scripts (one object per line). None of them creates a stream or a bucket: on a server
where there is nothing yet they say so and exit 0.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from collections.abc import Iterable
from typing import Any

from jsflow._js import js_errors, map_nats_errors
from jsflow._validate import check_id, check_name, duration
from jsflow.client import Client
from jsflow.errors import BucketError, ConfigError, TaskNotFoundError
from jsflow.keys import validate_pattern
from jsflow.tasks.backend import TaskBackend
from jsflow.tasks.events import TaskEvents
from jsflow.tasks.state import TaskInfo
from jsflow.tasks.stats import TaskStats, task_stats
from jsflow.tasks.status import TaskStatus
from jsflow.tasks.streams import TASK_STREAM, app_scope, split_token
from jsflow.tasks.worker import durable_name

__all__ = ["add_commands", "check_arguments", "run"]

_SPANS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def out(line: str) -> None:
    """One line on stdout, flushed (``jsflow events`` follows live; ``| head`` closing the
    pipe ends the command quietly)."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _since(text: str) -> float:
    """``"90"``, ``"10m"``, ``"2h"``, ``"1d"``: seconds."""
    unit = _SPANS.get(text[-1:])
    try:
        seconds = float(text[:-1]) * unit if unit else float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 90, 10m, 2h or 1d, got {text!r}") from None
    return seconds


def add_commands(
    sub: Any, common: argparse.ArgumentParser, scoped: argparse.ArgumentParser
) -> None:
    """Register ``events``, ``schedules``, ``workers`` and ``kv`` on the ``jsflow`` parser."""
    events = sub.add_parser("events", parents=[common, scoped], help="follow a task's events")
    events.add_argument("task_id")
    events.add_argument("--json", action="store_true", help="one JSON object per event")

    schedules = sub.add_parser("schedules", parents=[common, scoped], help="recurring schedules")
    schedules_sub = schedules.add_subparsers(dest="action", required=True)
    schedules_sub.add_parser("list", parents=[common, scoped], help="list schedules")
    cancel = schedules_sub.add_parser("cancel", parents=[common, scoped], help="cancel one")
    cancel.add_argument("schedule_id")

    workers = sub.add_parser(
        "workers", parents=[common, scoped], help="who runs what: consumers and running tasks"
    )
    workers.add_argument("--json", action="store_true", help="one JSON object per task name")

    kv = sub.add_parser("kv", parents=[common], help="read a KV bucket")
    kv_sub = kv.add_subparsers(dest="action", required=True)
    ls = kv_sub.add_parser("ls", parents=[common], help="list the keys of a bucket")
    ls.add_argument("bucket")
    ls.add_argument("filter", nargs="?", default=">")
    get = kv_sub.add_parser("get", parents=[common], help="print a key's value (raw)")
    get.add_argument("bucket")
    get.add_argument("key")


def add_list_options(parser: argparse.ArgumentParser) -> None:
    """``--json``, ``--limit`` and ``--since`` of ``tasks list`` and ``dlq list``."""
    parser.add_argument("--json", action="store_true", help="one JSON object per task")
    parser.add_argument("--limit", type=int, default=None, help="only the N most recent")
    parser.add_argument(
        "--since", type=_since, default=None, help="only tasks created this recently (10m, 2h)"
    )


def check_arguments(args: argparse.Namespace) -> None:
    """Everything checkable before connecting: a typo fails at once, with no I/O."""
    if args.command in ("tasks", "dlq", "stats", "events", "schedules", "workers"):
        app_scope(args.app)  # an App name here (worker's "app" is MODULE:ATTR)
    for attr, what in (("task_id", "task id"), ("schedule_id", "schedule id")):
        if getattr(args, attr, None) is not None:
            check_id(what, getattr(args, attr))
    if getattr(args, "limit", None) is not None and args.limit < 1:
        raise ConfigError(f"--limit must be at least 1, got {args.limit}")
    if getattr(args, "window", None) is not None:
        duration("--window", args.window)
    if args.command == "kv":
        check_name("bucket", args.bucket)
        if args.action == "ls":
            validate_pattern(args.filter)
        if args.action == "get":
            check_id("key", args.key)


def _local(stamp: float) -> str:
    if not stamp:
        return "-"
    return dt.datetime.fromtimestamp(stamp).strftime("%Y-%m-%d %H:%M:%S")


def _took(info: TaskInfo) -> str:
    if not info.started_at:
        return "-"
    end = info.finished_at or time.time()
    seconds = max(0.0, end - info.started_at)
    return f"{seconds * 1000:.0f}ms" if seconds < 10 else f"{seconds:.1f}s"


def _info_json(info: TaskInfo) -> dict[str, Any]:
    return {
        "id": info.id,
        "name": info.name,
        "status": info.status.value,
        "attempt": info.attempt,
        "worker": info.worker,
        "created_at": info.created_at,
        "started_at": info.started_at,
        "finished_at": info.finished_at,
        "error_type": info.error_type,
        "error_message": info.error_message,
        "depends_on": list(info.depends_on),
    }


def print_tasks(infos: Iterable[TaskInfo], args: argparse.Namespace) -> None:
    """The tasks table (or JSON lines) of ``tasks list`` and ``dlq list``, oldest first."""
    rows = sorted(infos, key=lambda i: i.created_at)
    if args.since is not None:
        rows = [i for i in rows if i.created_at >= time.time() - args.since]
    if args.limit is not None:
        rows = rows[-args.limit :]
    if args.json:
        for info in rows:
            out(json.dumps(_info_json(info), sort_keys=True))
        return
    out(f"{'ID':<32}  {'TASK':<20} {'STATUS':<9} {'TRY':>3} {'CREATED':<19} {'TOOK':>7}  ERROR")
    for info in rows:
        error = f"{info.error_type}: {info.error_message}"[:60] if info.error_type else ""
        out(
            f"{info.id[:32]:<32}  {info.name[:20]:<20} {info.status.value:<9} "
            f"{info.attempt:>3} {_local(info.created_at):<19} {_took(info):>7}  {error}"
        )


async def _backend(client: Client, app: str) -> TaskBackend | None:
    try:
        return await TaskBackend.open(client, app=app_scope(app), create=False)
    except BucketError as exc:
        sys.stderr.write(f"jsflow: {exc}\n")
        return None


async def run(args: argparse.Namespace, client: Client) -> int | None:
    """Run a read-only command; ``None`` when ``args`` names none of them."""
    if args.command == "kv":
        return await _kv(args, client)
    if args.command == "tasks" and args.action == "list":
        backend = await _backend(client, args.app)
        if backend is not None:
            statuses = [TaskStatus(s) for s in args.status]
            print_tasks(await backend.store.list(statuses=statuses, name=args.name), args)
        return 0
    if args.command == "dlq" and args.action == "list":
        backend = await _backend(client, args.app)
        if backend is not None:
            dead = [TaskStatus.FAILED, TaskStatus.DEAD]
            print_tasks(await backend.store.list(statuses=dead), args)
        return 0
    if args.command == "tasks" and args.action == "show":
        backend = await _backend(client, args.app)
        state = None if backend is None else await backend.store.get(args.task_id)
        if backend is None or state is None:
            raise TaskNotFoundError(args.task_id)
        found = TaskInfo.from_state(state)
        data = _info_json(found)
        data["traceback"] = state.traceback
        out(json.dumps(data, indent=2))
        return 0
    if args.command == "events":
        backend = await _backend(client, args.app)
        if backend is None:
            raise TaskNotFoundError(args.task_id)
        state = await backend.store.get(args.task_id)
        async for event in TaskEvents(
            client, args.task_id, name=state.name if state else "", app=backend.app
        ):
            if args.json:
                out(json.dumps({"seq": event.seq, "kind": event.kind, "attempt": event.attempt,
                                "progress": event.progress, "message": event.message,
                                "error_type": event.error_type, "time": event.time}))  # fmt: skip
                continue
            extra = f" {event.progress:.0f}%" if event.kind == "progress" else ""
            extra += f" {event.error_type}: {event.error_message}" if event.error_type else ""
            out(f"{_local(event.time)}  {event.kind:<10} attempt={event.attempt}{extra}")
        return 0
    if args.command == "stats":
        backend = await _backend(client, args.app)
        if backend is not None:
            _print_stats(await task_stats(backend, window=args.window), args.json)
        return 0
    if args.command == "schedules":
        return await _schedules(args, client)
    if args.command == "workers":
        return await _workers(args, client)
    return None


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f}ms" if seconds < 10 else f"{seconds:.1f}s"


def _print_stats(rows: list[TaskStats], as_json: bool) -> None:
    if as_json:
        for row in rows:
            out(json.dumps(row.as_dict(), sort_keys=True))
        return
    out(
        f"{'task':<24} {'done/s':>7} {'lag':>5} {'acks':>5} {'wait p50/p95':>14} "
        f"{'run p50/p95':>14} {'retry':>6} {'dead':>6}"
    )
    for r in rows:
        out(
            f"{r.name:<24} {r.throughput_per_s:>7.2f} {r.lag:>5} {r.ack_pending:>5} "
            f"{_ms(r.queue_wait_p50) + '/' + _ms(r.queue_wait_p95):>14} "
            f"{_ms(r.run_time_p50) + '/' + _ms(r.run_time_p95):>14} "
            f"{r.retry_rate:>6.1%} {r.dead_letter_rate:>6.1%}"
        )


async def _schedules(args: argparse.Namespace, client: Client) -> int:
    scope = app_scope(args.app)
    with map_nats_errors(subject=TASK_STREAM):
        try:
            info = await client.js.stream_info(TASK_STREAM, subjects_filter="task.schedule.>")
        except js_errors.NotFoundError:
            return 0
    found = []
    for subject in sorted((info.state.subjects or {}).keys()):
        _, _, token, schedule_id = subject.split(".", 3)
        app, name = split_token(token)
        if app != scope:
            continue
        with map_nats_errors(subject=subject):
            msg = await client.js.get_msg(TASK_STREAM, subject=subject)
        found.append((schedule_id, name, (msg.headers or {}).get("Nats-Schedule", ""), subject))
    if args.action == "cancel":
        targets = [f for f in found if f[0] == args.schedule_id]
        if not targets:
            raise ConfigError(f"no schedule {args.schedule_id!r} in app {args.app!r}")
        for _, _, _, subject in targets:
            with map_nats_errors(subject=subject):
                await client.js.purge_stream(TASK_STREAM, subject=subject)
        out(f"{args.schedule_id} cancelled")
        return 0
    out(f"{'SCHEDULE':<32} {'TASK':<24} SPEC")
    for schedule_id, name, spec, _ in found:
        out(f"{schedule_id:<32} {name:<24} {spec}")
    return 0


async def _workers(args: argparse.Namespace, client: Client) -> int:
    backend = await _backend(client, args.app)
    if backend is None:
        return 0
    infos = await backend.store.snapshot()
    names = sorted({i.name for i in infos})
    running: dict[str, dict[str, int]] = {}
    for info in infos:
        if info.status is TaskStatus.RUNNING and info.worker:
            running.setdefault(info.name, {}).setdefault(info.worker, 0)
            running[info.name][info.worker] += 1
    rows: list[dict[str, Any]] = []
    for name in names:
        with map_nats_errors(subject=TASK_STREAM):
            try:
                consumer = await client.js.consumer_info(
                    TASK_STREAM, durable_name(name, backend.app)
                )
            except js_errors.NotFoundError:
                consumer = None
        rows.append(
            {
                "task": name,
                "consumer": durable_name(name, backend.app),
                "pending": int(consumer.num_pending or 0) if consumer else 0,
                "ack_pending": int(consumer.num_ack_pending or 0) if consumer else 0,
                "waiting_pulls": int(consumer.num_waiting or 0) if consumer else 0,
                "running_on": running.get(name, {}),
            }
        )
    if args.json:
        for row in rows:
            out(json.dumps(row, sort_keys=True))
        return 0
    out(f"{'TASK':<24} {'PENDING':>7} {'ACKS':>5} {'PULLS':>5}  RUNNING ON")
    for row in rows:
        where = ", ".join(f"{w} ({n})" for w, n in row["running_on"].items()) or "-"
        out(
            f"{row['task']:<24} {row['pending']:>7} {row['ack_pending']:>5} "
            f"{row['waiting_pulls']:>5}  {where}"
        )
    return 0


async def _kv(args: argparse.Namespace, client: Client) -> int:
    stream = f"KV_{args.bucket}"
    with map_nats_errors(bucket=args.bucket):
        try:
            await client.js.stream_info(stream)
        except js_errors.NotFoundError:
            raise BucketError(f"bucket {args.bucket!r} does not exist") from None
    store = await client.object_store(args.bucket, bytes)
    if args.action == "ls":
        for key in await store.keys(args.filter):
            out(key)
        return 0
    entry = await store.get(args.key)
    if entry is None:
        raise ConfigError(f"no key {args.key!r} in bucket {args.bucket!r}")
    sys.stdout.buffer.write(entry.value + (b"" if entry.value.endswith(b"\n") else b"\n"))
    return 0
