"""Live metrics: a flow counts processed/failed per board in an ObjectStore; a watcher prints them.

.venv/bin/python examples/metrics_collection.py [--url nats://...]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
from dataclasses import dataclass
from typing import Any

import jsflow
from jsflow import FlowHandler, Message, StreamSource


@dataclass
class BoardMetric:
    processed: int = 0
    failed: int = 0


async def main(url: str | None) -> None:
    async with jsflow.ensure_server(url) as resolved, await jsflow.connect(resolved) as client:
        if not url:
            print(f"started nats-server at {resolved}")
        metrics = await client.object_store("board_metrics", BoardMetric)
        events = [{"board": f"b{i % 3}", "ok": i % 4 != 0} for i in range(12)]
        seen = 0
        finished = asyncio.Event()

        async def watch() -> None:
            nonlocal seen
            async with metrics.watch(">", updates_only=True) as changes:
                async for change in changes:
                    if change.value is not None:
                        seen += 1
                        v = change.value
                        print(f"  watch {change.key}: processed={v.processed} failed={v.failed}")
                        if seen == len(events):
                            finished.set()

        async def count(msg: Message[dict[str, Any]]) -> None:
            def bump(m: BoardMetric) -> None:
                if msg.data["ok"]:
                    m.processed += 1
                else:
                    m.failed += 1

            await metrics.update(msg.data["board"], bump)

        watcher = asyncio.create_task(watch())
        flow = FlowHandler(
            client,
            source=StreamSource("EVENTS", "events.in", "metrics", dict, fetch_timeout=0.2),
            stages=[count],
            key=lambda m: str(m.data["board"]),
        )
        try:
            async with flow:
                await asyncio.sleep(0.2)  # let the watcher start
                for event in events:
                    await client.js.publish("events.in", json.dumps(event).encode())
                await asyncio.wait_for(finished.wait(), 15)
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        for board in await metrics.keys():
            entry = await metrics.get(board)
            assert entry is not None
            print(f"{board}: processed={entry.value.processed} failed={entry.value.failed}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", help="NATS URL (default: start an embedded server)")
    asyncio.run(main(parser.parse_args().url))
