"""A second process for the trace tests: runs a task worker or a flow with the OpenTelemetry
SDK and writes its finished spans as JSON lines to a file.

    python tests/_otel_child.py worker URL APP SPANS_FILE SECONDS
    python tests/_otel_child.py flow URL NAME SPANS_FILE SECONDS
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Sequence

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

import jsflow


class FileExporter(SpanExporter):
    def __init__(self, path: str) -> None:
        self.path = path

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with open(self.path, "a") as fh:
            for span in spans:
                ctx = span.get_span_context()
                fh.write(
                    json.dumps(
                        {
                            "name": span.name,
                            "trace_id": format(ctx.trace_id, "032x"),
                            "span_id": format(ctx.span_id, "016x"),
                            "parent": format(span.parent.span_id, "016x") if span.parent else None,
                        }
                    )
                    + "\n"
                )
        return SpanExportResult.SUCCESS


async def main(mode: str, url: str, name: str, spans: str, seconds: float) -> None:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(FileExporter(spans)))
    trace.set_tracer_provider(provider)
    async with await jsflow.connect(url) as client:
        if mode == "worker":
            app = jsflow.App(client, name)

            @app.task
            async def traced(n: int) -> int:
                await jsflow.current_task().progress(50)
                return n * 2

            async with app.worker():
                print("ready", flush=True)
                await asyncio.sleep(seconds)
        else:

            async def inc(msg: jsflow.Message[int]) -> int:
                return msg.data + 1

            flow = jsflow.FlowHandler(
                client,
                source=jsflow.StreamSource(f"IN_{name}", f"in.{name}", f"d_{name}", int),
                stages=[inc],
                sink=jsflow.StreamSink(f"out.{name}", stream=f"OUT_{name}"),
            )
            async with flow:
                print("ready", flush=True)
                await asyncio.sleep(seconds)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], float(sys.argv[5])))
