"""Tasks and events on one embedded nats-server, printed as they happen.

    .venv/bin/python examples/tasks_demo.py [--url nats://...]

A domain event (``device.updated``) is expanded by an EventRouter into two task requests;
workers run them; a small DAG (fetch -> (resize, thumbnail) -> publish) runs in order; one
task reports progress, which is replayed from its event log.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json

import jsflow
from jsflow import App, EventRouter, current_task


def build_app(client: jsflow.Client) -> App:
    app = App(client, "demo")

    @app.task(retries=2, timeout=10)
    async def recalculate_fields(event: dict[str, object]) -> None:
        print(f"  recalculate_fields({event})")

    @app.task(retries=2)
    async def sync_external_systems(event: dict[str, object]) -> None:
        print(f"  sync_external_systems({event})")

    @app.task
    async def step(label: str) -> str:
        for pct in (25, 50, 100):
            await current_task().progress(pct, f"{label} {pct}%")
            await asyncio.sleep(0.05)
        print(f"  step {label}")
        return label.upper()

    return app


async def main(url: str | None) -> None:
    async with jsflow.ensure_server(url) as server_url, await jsflow.connect(server_url) as client:
        app = build_app(client)
        router = EventRouter(client, stream="DEMO_EVENTS", durable="demo_router")
        router.on("device.updated").request("recalculate_fields", "sync_external_systems")
        routing = asyncio.ensure_future(router.run())
        try:
            async with app.worker(concurrency=4):
                await asyncio.sleep(0.3)  # the router creates its stream
                print("publish device.updated")
                await client.js.publish("device.updated", json.dumps({"device": 7}).encode())
                step = app.tasks["step"]
                print("DAG fetch -> (resize, thumbnail) -> publish")
                fetch = await step.submit("fetch")
                resize = await step.submit("resize", depends_on=[fetch])
                thumb = await step.submit("thumbnail", depends_on=[fetch])
                final = await step.submit("publish", depends_on=[resize, thumb])
                print("result:", await final.result(timeout=30))
                print("events of", final.id)
                async for event in final.events(idle_timeout=5):
                    print(f"  {event.kind:<10} {event.progress:>5.0f}% {event.message}")
        finally:
            routing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await routing


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=None)
    asyncio.run(main(parser.parse_args().url))
