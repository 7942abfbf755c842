"""Tracing and metrics (OpenTelemetry API) and structured logging (structlog) across jsflow.

jsflow only depends on ``opentelemetry-api``: spans and instruments are no-ops until the
application installs an SDK tracer or meter provider (before or after jsflow is imported:
both follow the provider set later). Trace context travels in message headers as W3C
``traceparent`` (:func:`inject_context`, :func:`extracted_context`). Log events are structlog
events routed through the standard ``logging`` module under the ``jsflow`` logger names, so
the application decides levels and handlers (nothing below WARNING shows until it does).

The instruments, one catalog for every layer (:func:`instruments`), all prefixed ``jsflow.``:

* tasks: ``tasks.submitted``, ``tasks.started``, ``tasks.succeeded``, ``tasks.failed``,
  ``tasks.retried``, ``tasks.dead``, ``tasks.cancelled`` (counters by ``task``),
  ``tasks.queue_wait`` and ``tasks.run_duration`` (histograms, seconds);
* flows: ``flow.received``, ``flow.acked``, ``flow.retried``, ``flow.dead_lettered``,
  ``flow.filtered`` (counters by ``flow`` and ``stage``), ``flow.stage_latency`` (seconds);
* coordination: ``lock.acquisitions``, ``lock.lost`` (by ``bucket``), ``lock.wait_time``
  (seconds), ``limiter.decisions`` (by ``limiter`` and ``allowed``);
* store: ``store.updates``, ``store.conflicts``, ``store.retries`` (by ``bucket``),
  ``store.batch_size`` (updates combined into one write).
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import logging
import sys
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any

import structlog
from opentelemetry import context as otel_context
from opentelemetry import metrics, propagate, trace

from jsflow.errors import ConfigError

__all__ = [
    "Instruments",
    "configure_logging",
    "enable_prometheus",
    "extracted_context",
    "get_logger",
    "inject_context",
    "instruments",
    "meter",
    "prometheus_text",
    "reset_logging",
    "carries_trace",
    "optional_span",
    "tracer",
    "tracing_enabled",
]

_INSTRUMENTATION = "jsflow"
_PROCESSORS: list[Any] = [
    structlog.stdlib.filter_by_level,
    structlog.processors.format_exc_info,
    structlog.processors.KeyValueRenderer(key_order=["event"], sort_keys=True),
]


_DEFAULT_PROCESSORS = list(_PROCESSORS)
_LEVELS = ("debug", "info", "warning", "error")
_FORMATS = ("console", "json", "logfmt")
_HANDLER = logging.StreamHandler(sys.stderr)  # installed by configure_logging, once
_HANDLER.setFormatter(logging.Formatter("%(message)s"))


def configure_logging(level: str = "info", fmt: str = "console") -> None:
    """Show jsflow's log events at ``level`` and above on stderr, rendered as ``console``
    (readable, one line each), ``json`` (one object per line) or ``logfmt`` (key=value).
    For the CLI and scripts; a service with its own logging setup need not call it."""
    level = level.lower()
    if level not in _LEVELS:
        raise ConfigError(f"log level must be one of {list(_LEVELS)}, got {level!r}")
    if fmt not in _FORMATS:
        raise ConfigError(f"log format must be one of {list(_FORMATS)}, got {fmt!r}")
    renderer: Any
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer(sort_keys=True)
    elif fmt == "console":
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    else:
        renderer = structlog.processors.KeyValueRenderer(key_order=["event"], sort_keys=True)
    # In place: every logger made by get_logger shares this list.
    _PROCESSORS[:] = [
        structlog.stdlib.filter_by_level,
        structlog.stdlib.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=False),
        structlog.processors.format_exc_info,
        renderer,
    ]
    root = logging.getLogger(_INSTRUMENTATION)
    if _HANDLER not in root.handlers:
        root.addHandler(_HANDLER)
    root.setLevel(level.upper())


_PROMETHEUS: list[Any] = []  # the PrometheusMetricReader once enable_prometheus() ran


def enable_prometheus(port: int | None = None) -> None:
    """Export jsflow's instruments (and any others on the global meter provider) in the
    Prometheus format: installs an OpenTelemetry SDK meter provider with the Prometheus
    reader (once per process), and serves ``/metrics`` on ``port`` when given (a worker);
    the gateway's ``GET /metrics`` includes them. Needs the ``jsflow[prometheus]`` extra
    (:class:`ConfigError` naming it otherwise)."""
    if port is not None and (type(port) is not int or not 1 <= port <= 65535):
        raise ConfigError(f"port must be an integer from 1 to 65535, got {port!r}")
    try:
        exporter = importlib.import_module("opentelemetry.exporter.prometheus")
        sdk_metrics = importlib.import_module("opentelemetry.sdk.metrics")
        client = importlib.import_module("prometheus_client")
    except ImportError as exc:
        raise ConfigError(
            f"Prometheus export needs the jsflow[prometheus] extra ({exc.name} is missing)"
        ) from None
    if not _PROMETHEUS:
        reader = exporter.PrometheusMetricReader()
        metrics.set_meter_provider(sdk_metrics.MeterProvider(metric_readers=[reader]))
        _PROMETHEUS.append(reader)
    if port is not None:
        client.start_http_server(port)


def prometheus_text() -> str:
    """The instruments in the Prometheus text format (empty unless
    :func:`enable_prometheus` ran)."""
    if not _PROMETHEUS:
        return ""
    client = importlib.import_module("prometheus_client")
    return str(client.generate_latest().decode())


def reset_logging() -> None:
    """Undo :func:`configure_logging`: jsflow's default rendering, no handler of its own,
    the level left to the application (what a test suite calls between tests)."""
    _PROCESSORS[:] = _DEFAULT_PROCESSORS
    root = logging.getLogger(_INSTRUMENTATION)
    if _HANDLER in root.handlers:
        root.removeHandler(_HANDLER)
    root.setLevel(logging.NOTSET)


class _BoundLogger(structlog.stdlib.BoundLogger):
    """structlog's stdlib logger, asking the level before building a ``debug`` or ``info``
    event (the hot paths log at those; a dropped event otherwise costs a few microseconds
    of processing and an exception)."""

    def debug(self, event: str | None = None, *args: Any, **kw: Any) -> Any:
        """Log ``event`` at DEBUG, if enabled."""
        if not self._logger.isEnabledFor(logging.DEBUG):
            return None
        return super().debug(event, *args, **kw)

    def info(self, event: str | None = None, *args: Any, **kw: Any) -> Any:
        """Log ``event`` at INFO, if enabled."""
        if not self._logger.isEnabledFor(logging.INFO):
            return None
        return super().info(event, *args, **kw)


def get_logger(name: str, **initial: Any) -> Any:
    """A structlog logger for module ``name``, emitting through ``logging.getLogger(name)``."""
    # Cached on first use: otherwise every call binds a new logger (~12 us, even for an
    # event its level drops). The processors stay this module's one list, changed in place.
    return structlog.wrap_logger(
        logging.getLogger(name),
        processors=_PROCESSORS,
        wrapper_class=_BoundLogger,
        cache_logger_on_first_use=True,
        **initial,
    )


@functools.cache
def tracer() -> trace.Tracer:
    """The jsflow tracer (a proxy that follows the tracer provider the application sets)."""
    return trace.get_tracer(_INSTRUMENTATION)


@functools.cache
def meter() -> metrics.Meter:
    """The jsflow meter (a proxy that follows the meter provider the application sets)."""
    return metrics.get_meter(_INSTRUMENTATION)


# What the API returns while the application has installed no tracer provider: spans are
# then no-ops, and a hot path may skip making them (see :func:`tracing_enabled`).
_NO_TRACING = (trace.ProxyTracerProvider, trace.NoOpTracerProvider)


def tracing_enabled() -> bool:
    """Whether the application installed a tracer provider (an SDK): until it does, spans
    record nothing and per-message paths skip creating them. Cheap: read per call, so a
    provider installed later takes effect at once."""
    return not isinstance(trace.get_tracer_provider(), _NO_TRACING)


@functools.lru_cache(maxsize=8)
def _fields(textmap: Any) -> frozenset[str]:
    return frozenset(textmap.fields)


_NO_SPAN = contextlib.nullcontext()


def optional_span(
    name: str,
    attributes: Mapping[str, Any],
    *,
    headers: Mapping[str, str] | None = None,
    kind: trace.SpanKind = trace.SpanKind.INTERNAL,
) -> contextlib.AbstractContextManager[object]:
    """A current span ``name`` with ``attributes``, continuing the trace carried in message
    ``headers`` if any; nothing at all when no tracer provider is installed and ``headers``
    carry no trace. Such a span would record nothing, and the context it would carry on
    (what :func:`inject_context` writes) is the current one either way: the one mechanism
    that keeps per-message and per-call paths from paying for spans nobody records."""
    if not tracing_enabled() and not carries_trace(headers):
        return _NO_SPAN
    context = extracted_context(headers) if headers is not None else None
    return tracer().start_as_current_span(
        name, context=context, kind=kind, attributes=dict(attributes)
    )


def carries_trace(headers: Mapping[str, str] | None) -> bool:
    """Whether ``headers`` hold a field of the global propagator (``traceparent``, ...):
    a no-op span still carries such a context on to what is published inside it."""
    if not headers:
        return False
    return any(name in headers for name in _fields(propagate.get_global_textmap()))


def inject_context(headers: MutableMapping[str, str]) -> MutableMapping[str, str]:
    """Write the current trace context (``traceparent``, ``tracestate``) into ``headers``;
    nothing when no span is recording (no SDK installed). Returns ``headers``."""
    propagate.inject(headers)
    return headers


def extracted_context(headers: Mapping[str, str] | None) -> otel_context.Context:
    """The trace context carried in message ``headers`` (an empty one when none is)."""
    return propagate.extract(dict(headers or {}))


_SECONDS = "s"


@dataclass(frozen=True, slots=True)
class Instruments:
    """Every OpenTelemetry instrument jsflow records (see the module docstring)."""

    tasks_submitted: metrics.Counter
    tasks_started: metrics.Counter
    tasks_succeeded: metrics.Counter
    tasks_failed: metrics.Counter
    tasks_retried: metrics.Counter
    tasks_dead: metrics.Counter
    tasks_cancelled: metrics.Counter
    tasks_queue_wait: metrics.Histogram
    tasks_run_duration: metrics.Histogram
    flow_received: metrics.Counter
    flow_acked: metrics.Counter
    flow_retried: metrics.Counter
    flow_dead_lettered: metrics.Counter
    flow_filtered: metrics.Counter
    flow_stage_latency: metrics.Histogram
    lock_acquisitions: metrics.Counter
    lock_lost: metrics.Counter
    lock_wait_time: metrics.Histogram
    limiter_decisions: metrics.Counter
    store_updates: metrics.Counter
    store_conflicts: metrics.Counter
    store_retries: metrics.Counter
    store_batch_size: metrics.Histogram


@functools.cache
def instruments() -> Instruments:
    """The instruments, created once on the jsflow meter."""
    m = meter()

    def counter(name: str, what: str) -> metrics.Counter:
        return m.create_counter(f"jsflow.{name}", unit="1", description=what)

    def seconds(name: str, what: str) -> metrics.Histogram:
        return m.create_histogram(f"jsflow.{name}", unit=_SECONDS, description=what)

    return Instruments(
        tasks_submitted=counter("tasks.submitted", "task requests published"),
        tasks_started=counter("tasks.started", "task attempts started"),
        tasks_succeeded=counter("tasks.succeeded", "tasks that succeeded"),
        tasks_failed=counter("tasks.failed", "tasks that failed after their retries"),
        tasks_retried=counter("tasks.retried", "failed attempts that will be retried"),
        tasks_dead=counter("tasks.dead", "tasks that could not be executed"),
        tasks_cancelled=counter("tasks.cancelled", "tasks cancelled"),
        tasks_queue_wait=seconds("tasks.queue_wait", "from request to the attempt's start"),
        tasks_run_duration=seconds("tasks.run_duration", "of one attempt's function"),
        flow_received=counter("flow.received", "messages a flow received"),
        flow_acked=counter("flow.acked", "messages a flow finished and acked"),
        flow_retried=counter("flow.retried", "messages handed back for redelivery"),
        flow_dead_lettered=counter("flow.dead_lettered", "messages dead-lettered"),
        flow_filtered=counter("flow.filtered", "messages a stage dropped"),
        flow_stage_latency=seconds("flow.stage_latency", "of one stage on one message"),
        lock_acquisitions=counter("lock.acquisitions", "leases acquired"),
        lock_lost=counter("lock.lost", "leases lost while held"),
        lock_wait_time=seconds("lock.wait_time", "waiting to acquire a lease"),
        limiter_decisions=counter("limiter.decisions", "rate limiter decisions"),
        store_updates=counter("store.updates", "updates applied"),
        store_conflicts=counter("store.conflicts", "compare-and-set conflicts"),
        store_retries=counter("store.retries", "update retries after a conflict"),
        store_batch_size=m.create_histogram(
            "jsflow.store.batch_size", unit="1", description="updates combined into one write"
        ),
    )
