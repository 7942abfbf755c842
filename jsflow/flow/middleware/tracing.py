"""Tracing: one OpenTelemetry span per stage, W3C trace context carried in headers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from opentelemetry import propagate, trace

from jsflow.flow.handler import NamedStage, StageFn, outputs_of, stage_name
from jsflow.flow.message import Message
from jsflow.observability import tracer

__all__ = ["Tracing"]


@dataclass(frozen=True, slots=True)
class Tracing:
    """Run the wrapped stage in a span ``<prefix><stage>`` whose parent is the context in the
    message headers (``traceparent``), and write the span's context into each output's
    headers, so the next stage, flow or consumer continues the trace.
    """

    prefix: str = "jsflow.flow.stage "

    def __call__(self, stage: StageFn) -> StageFn:
        """Wrap ``stage``."""
        name = stage_name(stage)
        span_name = self.prefix + name

        async def traced(msg: Message[Any]) -> Any:
            parent = propagate.extract(dict(msg.headers))
            with tracer().start_as_current_span(
                span_name, context=parent, kind=trace.SpanKind.CONSUMER
            ) as span:
                span.set_attribute("messaging.message.id", msg.id)
                span.set_attribute("messaging.destination.name", msg.subject)
                span.set_attribute("jsflow.correlation_id", msg.correlation_id)
                span.set_attribute("jsflow.delivery", msg.delivery)
                result = await stage(msg)
                carrier: dict[str, str] = {}
                propagate.inject(carrier)
            outputs = outputs_of(msg, result)
            traced_outputs = [out.with_headers(**carrier) for out in outputs]
            if result is None:
                return None
            return traced_outputs if isinstance(result, list) else traced_outputs[0]

        return NamedStage(name, traced)
