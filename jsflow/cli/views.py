"""The read-only commands of ``jsflow``: tasks, events, schedules, workers, KV buckets,
dead letters (and the replay of flow dead letters, which reads them the same way).

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
from jsflow.errors import (
    BucketError,
    ConfigError,
    ConnectionClosedError,
    JsflowError,
    TaskNotFoundError,
)
from jsflow.flow.monitor import DeadLetterMessage, FlowMonitor
from jsflow.keys import validate_pattern
from jsflow.store.values import Change
from jsflow.tasks.backend import TaskBackend
from jsflow.tasks.events import TaskEvent, TaskEvents
from jsflow.tasks.firehose import Firehose
from jsflow.tasks.state import TaskInfo
from jsflow.tasks.stats import TaskStats, task_stats
from jsflow.tasks.status import TaskStatus
from jsflow.tasks.streams import TASK_STREAM, app_scope, split_token
from jsflow.tasks.worker import durable_name

__all__ = [
    "add_commands",
    "add_list_options",
    "add_stream_option",
    "check_arguments",
    "replay_flow_dead_letters",
    "run",
]

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
    watch = kv_sub.add_parser("watch", parents=[common], help="follow a bucket's changes, live")
    watch.add_argument("bucket")
    watch.add_argument("filter", nargs="?", default=">")
    watch.add_argument("--history", action="store_true", help="replay the retained history first")
    watch.add_argument("--json", action="store_true", help="one JSON object per change")


def add_list_options(parser: argparse.ArgumentParser) -> None:
    """``--json``, ``--limit`` and ``--since`` of ``tasks list`` and ``dlq list``."""
    parser.add_argument("--json", action="store_true", help="one JSON object per task")
    parser.add_argument("--limit", type=int, default=None, help="only the N most recent")
    parser.add_argument(
        "--since", type=_since, default=None, help="only tasks created this recently (10m, 2h)"
    )


def add_stream_option(parser: argparse.ArgumentParser, text: str) -> None:
    """``--stream`` of ``dlq list`` and ``dlq replay``: flow dead-letter streams."""
    parser.add_argument("--stream", action="append", default=[], metavar="STREAM", help=text)


def check_arguments(args: argparse.Namespace) -> None:
    """Everything checkable before connecting: a typo fails at once, with no I/O."""
    if args.command in ("tasks", "dlq", "stats", "events", "schedules", "workers"):
        app_scope(args.app)  # an App name here (worker's "app" is MODULE:ATTR)
    for attr, what in (("task_id", "task id"), ("schedule_id", "schedule id")):
        if getattr(args, attr, None) is not None:
            check_id(what, getattr(args, attr))
    if getattr(args, "limit", None) is not None and args.limit < 1:
        raise ConfigError(f"--limit must be at least 1, got {args.limit}")
    if args.command == "worker":
        if args.processes < 1 or args.processes > 256:
            raise ConfigError(f"--processes must be 1 to 256, got {args.processes}")
        duration("--grace", args.grace, positive=False)
    if getattr(args, "window", None) is not None:
        duration("--window", args.window)
    for stream in getattr(args, "stream", None) or ():
        check_name("--stream", stream)
    if args.command == "dlq" and args.action == "replay" and args.stream:
        if len(args.stream) > 1:
            raise ConfigError("dlq replay takes one --stream at a time")
        for seq in args.task_ids:
            if not seq.isdigit() or int(seq) < 1:
                raise ConfigError(f"with --stream, replay takes sequences (1, 2, ...), got {seq!r}")
        if not args.task_ids and not args.all:
            raise ConfigError("dlq replay --stream needs sequences or --all")
    if args.command == "kv":
        check_name("bucket", args.bucket)
        if args.action in ("ls", "watch"):
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
        if not args.stream:  # --stream: only those flow dead letters
            backend = await _backend(client, args.app)
            if backend is not None:
                dead = [TaskStatus.FAILED, TaskStatus.DEAD]
                print_tasks(await backend.store.list(statuses=dead), args)
        await _flow_dead_letters(args, client)
        return 0
    if args.command == "tasks" and args.action == "watch":
        return await _watch_tasks(args, client)
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
            _print_event(event, args.json, with_task=False)
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


def _print_event(event: TaskEvent, as_json: bool, *, with_task: bool) -> None:
    """One line of ``jsflow events`` (one task) or ``jsflow tasks watch`` (every task)."""
    if as_json:
        data: dict[str, Any] = {"seq": event.seq, "kind": event.kind, "attempt": event.attempt,
                                "progress": event.progress, "message": event.message,
                                "error_type": event.error_type, "time": event.time}  # fmt: skip
        if with_task:
            data.update(task_id=event.task_id, name=event.name)
            data.pop("seq")  # live events are not read from the stream
        out(json.dumps(data))
        return
    extra = f" {event.progress:.0f}%" if event.kind == "progress" else ""
    extra += f" {event.error_type}: {event.error_message}" if event.error_type else ""
    task = f"{event.name[:24]:<24} {event.task_id}  " if with_task else ""
    out(f"{_local(event.time)}  {event.kind:<10} {task}attempt={event.attempt}{extra}")


async def _watch_tasks(args: argparse.Namespace, client: Client) -> int:
    """``jsflow tasks watch``: every task event of the app as it happens (the firehose the
    gateway serves, on one core subscription), until Ctrl-C or the connection closes."""
    hub = Firehose(client)
    names = frozenset({args.name}) if args.name else frozenset()
    follower = await hub.join(apps=frozenset({app_scope(args.app)}), names=names)
    try:
        while not client.nc.is_closed:
            items, dropped = await follower.next(timeout=1.0)
            if dropped:
                sys.stderr.write(f"jsflow: {dropped} events dropped (the output fell behind)\n")
            for item in items:
                _print_event(item.event, args.json, with_task=True)
        raise ConnectionClosedError("the connection is closed")
    finally:
        await hub.aclose()


# Dead letters read per stream by ``dlq list`` at most (the newest ``--limit`` are shown).
_MAX_DEAD_LETTERS = 10_000


async def _dead_letters(
    monitor: FlowMonitor, stream: str, limit: int = _MAX_DEAD_LETTERS
) -> list[DeadLetterMessage]:
    found: list[DeadLetterMessage] = []
    after = 0
    while len(found) < limit:
        page, after = await monitor.list(stream, after, min(200, limit - len(found)))
        found.extend(page)
        if not after:
            break
    return found


async def _flow_dead_letters(args: argparse.Namespace, client: Client) -> None:
    """The dead letters of flows and routers: of ``--stream``, or of every stream whose
    messages are jsflow dead letters."""
    monitor = FlowMonitor(client, tuple(args.stream), exclude=(TASK_STREAM,))
    streams = list(args.stream) or [str(f["stream"]) for f in await monitor.dead_letter_streams()]
    rows: list[DeadLetterMessage] = []
    for stream in streams:
        rows.extend(await _dead_letters(monitor, stream))
    if args.since is not None:
        rows = [m for m in rows if (m.time or 0.0) >= time.time() - args.since]
    rows.sort(key=lambda m: m.time or 0.0)
    if args.limit is not None:
        rows = rows[-args.limit :]
    if args.json:
        for m in rows:
            out(json.dumps({"stream": m.stream, "seq": m.seq, "time": m.time,
                            "original_subject": m.original_subject, "stage": m.stage,
                            "delivery": m.delivery, "error_type": m.error_type,
                            "error_message": m.error_message}, sort_keys=True))  # fmt: skip
        return
    if not rows and not args.stream:
        return  # no flow dead letters anywhere: the tasks table says it all
    out("")
    out(f"{'FLOW DEAD LETTER':<28} {'FAILED':<19} {'SUBJECT':<24} {'TRY':>3}  ERROR")
    for m in rows:
        where = f"{m.stream}#{m.seq}"
        error = f"{m.error_type}: {m.error_message}"[:60] if m.error_type else ""
        out(
            f"{where[:28]:<28} {_local(m.time or 0.0):<19} {m.original_subject[:24]:<24} "
            f"{m.delivery or 0:>3}  {error}"
        )


async def replay_flow_dead_letters(args: argparse.Namespace, client: Client) -> int:
    """``jsflow dlq replay --stream DL <seq>... | --all``: republish flow dead letters to
    their original subjects (each once: the replay carries a dedupe id naming it) and
    remove them; one that cannot be replayed does not stop the others."""
    (stream,) = args.stream
    monitor = FlowMonitor(client, (stream,), exclude=(TASK_STREAM,))
    seqs = [int(s) for s in args.task_ids]
    if args.all:
        seqs += [m.seq for m in await _dead_letters(monitor, stream)]
    failed = 0
    for seq in dict.fromkeys(seqs):
        try:
            done = await monitor.replay(stream, seq)
        except JsflowError as exc:
            failed += 1
            sys.stderr.write(f"jsflow: {type(exc).__name__}: {exc}\n")
            continue
        out(f"{stream}#{seq} replayed to {done['subject']} ({done['stream']} #{done['seq']})")
    return 1 if failed else 0


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
    if args.action == "watch":
        async with store.watch(args.filter, include_history=args.history) as changes:
            async for change in changes:
                _print_change(change, args.json)
        return 0
    if args.action == "ls":
        for key in await store.keys(args.filter):
            out(key)
        return 0
    entry = await store.get(args.key)
    if entry is None:
        raise ConfigError(f"no key {args.key!r} in bucket {args.bucket!r}")
    sys.stdout.buffer.write(entry.value + (b"" if entry.value.endswith(b"\n") else b"\n"))
    return 0


def _print_change(change: Change[bytes], as_json: bool) -> None:
    """One line of ``jsflow kv watch``: the revision, the operation, the key and the value
    (as text when it is UTF-8, else its size)."""
    value = change.value
    text: str | None = None
    if value is not None:
        try:
            text = value.decode("utf-8")
        except UnicodeDecodeError:
            text = None
    if as_json:
        out(json.dumps({"revision": change.revision, "op": change.op.value, "key": change.key,
                        "value": text, "size": None if value is None else len(value)}))  # fmt: skip
        return
    shown = "" if value is None else (text if text is not None else f"<{len(value)} bytes>")
    out(f"{change.revision:>8} {change.op.value:<6} {change.key}  {shown[:200]}")
