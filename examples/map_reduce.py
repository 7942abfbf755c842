"""Word count map-reduce: lines -> words (flat_map) -> batch -> per-word counts in an ObjectStore.

.venv/bin/python examples/map_reduce.py [--url nats://...]
"""

from __future__ import annotations

import argparse
import asyncio
from collections import Counter

import jsflow
from jsflow import Batch, FlowHandler, Message, StreamSource, flat_map

TEXT = [
    "the quick brown fox jumps over the lazy dog",
    "the dog barks and the fox runs",
    "a lazy afternoon for a quick brown dog",
]


async def main(url: str | None) -> None:
    async with jsflow.ensure_server(url) as resolved, await jsflow.connect(resolved) as client:
        if not url:
            print(f"started nats-server at {resolved}")
        counts = await client.object_store("wordcount", dict)
        remaining = sum(len(line.split()) for line in TEXT)
        finished = asyncio.Event()

        async def reduce(msg: Message[list[str]]) -> None:
            nonlocal remaining
            partial = Counter(msg.data)
            await counts.update(
                "totals",
                lambda totals: totals.update({w: totals.get(w, 0) + n for w, n in partial.items()}),
            )
            remaining -= len(msg.data)
            print(f"reduced a batch of {len(msg.data)} words; {remaining} to go")
            if remaining <= 0:
                finished.set()

        flow = FlowHandler(
            client,
            source=StreamSource("LINES", "lines.in", "wordcount", str, fetch_timeout=0.2),
            stages=[flat_map(str.split), Batch(size=8, window=0.2), reduce],
            concurrency=32,
        )
        async with flow:
            for line in TEXT:
                await client.js.publish("lines.in", line.encode())
                print(f"map: {line!r}")
            await asyncio.wait_for(finished.wait(), 15)
        entry = await counts.get("totals")
        top = sorted((entry.value if entry else {}).items(), key=lambda kv: (-kv[1], kv[0]))[:5]
        print("top words:", ", ".join(f"{w}={n}" for w, n in top))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", help="NATS URL (default: start an embedded server)")
    asyncio.run(main(parser.parse_args().url))
