"""What the gateway sends: tasks, events and dead letters as JSON-ready dicts; page cursors."""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime as dt
import decimal
import enum
import json
import uuid
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from google.protobuf import json_format
from google.protobuf.message import Message as ProtoMessage

from jsflow.flow.monitor import DeadLetterMessage
from jsflow.tasks.events import TaskEvent
from jsflow.tasks.state import TaskInfo
from jsflow.web.errors import BadRequestError

__all__ = [
    "decode_cursor",
    "encode_cursor",
    "event_json",
    "info_json",
    "jsonable",
    "task_urls",
    "dead_letter_json",
    "text_or_base64",
]

_MAX_DEPTH = 32


def jsonable(value: Any, _depth: int = 0) -> Any:
    """``value`` as plain JSON types: dataclasses, pydantic models, protobuf and betterproto
    messages become objects; datetimes, UUIDs, decimals and enums strings; bytes base64."""
    if _depth > _MAX_DEPTH:
        return repr(value)
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, Mapping):
        return {str(k): jsonable(v, _depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v, _depth + 1) for v in value]
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode()
    if isinstance(value, enum.Enum):
        return jsonable(value.value, _depth + 1)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, uuid.UUID | decimal.Decimal):
        return str(value)
    if isinstance(value, ProtoMessage):
        return json_format.MessageToDict(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: jsonable(getattr(value, f.name), _depth + 1) for f in dataclasses.fields(value)
        }
    for method in ("model_dump", "to_dict"):  # pydantic, betterproto
        dump = getattr(value, method, None)
        if callable(dump):
            try:
                return jsonable(dump(), _depth + 1)
            except Exception:
                break
    return repr(value)


def task_urls(root: str, task_id: str) -> dict[str, str]:
    """The gateway paths of one task (``root``: the mount prefix, ``""`` at the top)."""
    base = f"{root}/tasks/{quote(task_id, safe='/=')}"
    return {
        "self": base,
        "events": f"{base}/events",
        "cancel": f"{base}/cancel",
        "replay": f"{base}/replay",
    }


def info_json(info: TaskInfo, app: str, root: str) -> dict[str, Any]:
    """A task's state snapshot (the fields every listing shows)."""
    return {
        "id": info.id,
        "name": info.name,
        "app": app,
        "status": info.status.value,
        "terminal": info.status.terminal,
        "attempt": info.attempt,
        "error": (
            {"type": info.error_type, "message": info.error_message}
            if info.error_type or info.error_message
            else None
        ),
        "worker": info.worker or None,
        "created_at": info.created_at or None,
        "started_at": info.started_at or None,
        "finished_at": info.finished_at or None,
        "cancel_requested": info.cancel_requested,
        "depends_on": list(info.depends_on),
        "revision": info.revision,
        "urls": task_urls(root, info.id),
    }


def event_json(event: TaskEvent, app: str) -> dict[str, Any]:
    """One task event as sent on the SSE streams (``seq``: its stream sequence, 0 when it
    came live from the firehose)."""
    return {
        "seq": event.seq,
        "task_id": event.task_id,
        "name": event.name,
        "app": app,
        "kind": event.kind,
        "terminal": event.terminal,
        "attempt": event.attempt,
        "progress": event.progress,
        "message": event.message,
        "error": (
            {"type": event.error_type, "message": event.error_message}
            if event.error_type or event.error_message
            else None
        ),
        "time": event.time or None,
    }


def text_or_base64(data: bytes) -> dict[str, Any]:
    """A message body: ``{"encoding": "utf-8", "data": text}`` when it is text, else base64."""
    try:
        return {"encoding": "utf-8", "data": data.decode("utf-8"), "size": len(data)}
    except UnicodeDecodeError:
        return {"encoding": "base64", "data": base64.b64encode(data).decode(), "size": len(data)}


def dead_letter_json(msg: DeadLetterMessage, *, preview: int | None = None) -> dict[str, Any]:
    """A flow dead letter as JSON; ``preview`` bytes of the body at most (all when ``None``)."""
    data = msg.data if preview is None else msg.data[:preview]
    body = text_or_base64(data)
    body["size"] = len(msg.data)
    body["complete"] = len(data) == len(msg.data)
    return {
        "stream": msg.stream,
        "seq": msg.seq,
        "subject": msg.subject,
        "time": msg.time,
        "original_subject": msg.original_subject or None,
        "original_stream": msg.original_stream,
        "original_sequence": msg.original_sequence,
        "error": {"type": msg.error_type, "message": msg.error_message},
        "stage": msg.stage,
        "delivery": msg.delivery,
        "failed_at": msg.failed_at,
        "truncated": msg.truncated,
        "headers": dict(msg.headers),
        "body": body,
    }


def encode_cursor(created_at: float, task_id: str) -> str:
    """An opaque page cursor: the position just after the task ``(created_at, task_id)``."""
    raw = json.dumps([created_at, task_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[float, str]:
    """The position a cursor of :func:`encode_cursor` names (:class:`BadRequestError` when it
    is not one)."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created_at, task_id = json.loads(raw)
        if not isinstance(task_id, str) or not isinstance(created_at, int | float):
            raise ValueError("not a cursor")
        return float(created_at), task_id
    except (ValueError, TypeError, binascii.Error) as exc:
        raise BadRequestError(f"cursor {cursor[:40]!r} is not one this gateway gave") from exc
