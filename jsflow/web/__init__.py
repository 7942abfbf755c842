"""``jsflow.web``: the HTTP gateway and live monitor (the ``jsflow[web]`` extra).

:func:`create_app` gives an ASGI application: HTTP commands (submit, query, cancel and
replay tasks), each task's events as server-sent events that resume after
``Last-Event-ID`` with nothing lost or repeated, a live firehose of task events, dead
letters of tasks and flows, queues and workers, ``/healthz``, ``/readyz``, ``/metrics``,
and a monitor page at ``/`` (plain HTML, JavaScript and CSS shipped in the package).
``jsflow serve`` runs it under uvicorn. Followers cost the server nothing each: per-task
streams read by direct get and share one subscription, the firehose shares another.
"""

from __future__ import annotations

try:
    import sse_starlette as _sse_starlette
    import starlette as _starlette
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        f"jsflow.web needs the web extra ({exc.name} is missing): pip install 'jsflow[web]'"
    ) from exc

from jsflow.web.errors import (
    STATUS,
    AmbiguousTaskError,
    BadRequestError,
    DeadLetterNotFoundError,
    GatewayError,
    InvalidArgumentsError,
    NotReplayableError,
    UnknownAppError,
    UnknownTaskError,
)
from jsflow.web.gateway import Gateway
from jsflow.web.routes import create_app

__all__ = [
    "STATUS",
    "AmbiguousTaskError",
    "BadRequestError",
    "DeadLetterNotFoundError",
    "Gateway",
    "GatewayError",
    "InvalidArgumentsError",
    "NotReplayableError",
    "UnknownAppError",
    "UnknownTaskError",
    "create_app",
]

del _sse_starlette, _starlette
