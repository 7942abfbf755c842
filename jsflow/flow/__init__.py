"""Flows: Message, MessageHandler and FlowHandler pipelines over JetStream streams.

A stage is an async function ``(Message[In]) -> Out | list[Out] | None`` or a
:class:`MessageHandler`; middleware (``jsflow.flow.middleware``) wraps stages. The source
message is acked only after every stage and every publish it caused succeeded.
"""

from __future__ import annotations

from jsflow.flow.errors import FlowError, StageError, StageTimeoutError
from jsflow.flow.handler import MessageHandler, Middleware, Stage
from jsflow.flow.message import Message
from jsflow.flow.metrics import FlowMetrics, MetricsSnapshot
from jsflow.flow.operators import Batch, Split, filter_, flat_map, map_
from jsflow.flow.pipeline import FlowHandler
from jsflow.flow.sink import Sink, StreamSink
from jsflow.flow.source import StreamSource
from jsflow.flow.state import MessageState, MessageStatus

__all__ = [
    "Batch",
    "FlowError",
    "FlowHandler",
    "FlowMetrics",
    "Message",
    "MessageHandler",
    "MessageState",
    "MessageStatus",
    "MetricsSnapshot",
    "Middleware",
    "Sink",
    "Split",
    "Stage",
    "StageError",
    "StageTimeoutError",
    "StreamSink",
    "StreamSource",
    "filter_",
    "flat_map",
    "map_",
]
