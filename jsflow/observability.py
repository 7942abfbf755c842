"""Tracing (OpenTelemetry API) and structured logging (structlog) used across jsflow.

jsflow only depends on ``opentelemetry-api``: spans are no-ops until the application installs
an SDK tracer provider. Log events are structlog events routed through the standard
``logging`` module under the ``jsflow`` logger names, so the application decides levels and
handlers (nothing below WARNING shows until it does).
"""

from __future__ import annotations

import functools
import logging
from typing import Any

import structlog
from opentelemetry import trace

__all__ = ["get_logger", "tracer"]

_INSTRUMENTATION = "jsflow"
_PROCESSORS: list[Any] = [
    structlog.stdlib.filter_by_level,
    structlog.processors.format_exc_info,
    structlog.processors.KeyValueRenderer(key_order=["event"], sort_keys=True),
]


def get_logger(name: str, **initial: Any) -> Any:
    """A structlog logger for module ``name``, emitting through ``logging.getLogger(name)``."""
    return structlog.wrap_logger(
        logging.getLogger(name),
        processors=_PROCESSORS,
        wrapper_class=structlog.stdlib.BoundLogger,
        **initial,
    )


@functools.cache
def tracer() -> trace.Tracer:
    """The jsflow tracer (a proxy that follows the tracer provider the application sets)."""
    return trace.get_tracer(_INSTRUMENTATION)
