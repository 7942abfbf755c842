"""Scatter-gather search: a query fans out to N shard streams, a gather flow joins the hits.

.venv/bin/python examples/scatter_gather.py [--url nats://...] [--shards 3]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
from typing import Any

import jsflow
from jsflow import FlowHandler, Message, StreamSink, StreamSource

DOCS = ["nats streams", "jetstream kv", "python asyncio", "nats kv watch", "stream consumers"]


def shard_stage(shard: int, shards: int) -> Any:
    docs = [d for i, d in enumerate(DOCS) if i % shards == shard]

    async def search(msg: Message[dict[str, Any]]) -> dict[str, Any]:
        hits = [d for d in docs if msg.data["term"] in d]
        print(f"  shard {shard}: {msg.data['term']!r} -> {hits}")
        return {"query": msg.data["id"], "shard": shard, "hits": hits}

    search.__name__ = f"shard{shard}"
    return search


async def main(url: str | None, shards: int) -> None:
    async with jsflow.ensure_server(url) as resolved, await jsflow.connect(resolved) as client:
        if not url:
            print(f"started nats-server at {resolved}")
        results: dict[str, list[dict[str, Any]]] = {}
        complete = asyncio.Event()

        async def gather(msg: Message[dict[str, Any]]) -> None:
            got = results.setdefault(msg.data["query"], [])
            got.append(msg.data)
            if len(got) == shards:
                hits = sorted(h for part in got for h in part["hits"])
                print(f"gathered {msg.data['query']}: {hits}")
                if len(results) == 2 and all(len(v) == shards for v in results.values()):
                    complete.set()

        flows = [
            FlowHandler(
                client,
                source=StreamSource(
                    f"SHARD{i}", f"search.shard{i}", f"shard{i}", dict, fetch_timeout=0.2
                ),
                stages=[shard_stage(i, shards)],
                sink=StreamSink("search.partial", stream="PARTIALS"),
            )
            for i in range(shards)
        ]
        gatherer = FlowHandler(
            client,
            source=StreamSource("PARTIALS", "search.partial", "gather", dict, fetch_timeout=0.2),
            stages=[gather],
        )
        async with contextlib.AsyncExitStack() as stack:
            for flow in [*flows, gatherer]:
                await stack.enter_async_context(flow)
            for qid, term in (("q1", "nats"), ("q2", "kv")):
                print(f"scatter {qid}: {term!r} to {shards} shards")
                body = json.dumps({"id": qid, "term": term}).encode()
                for i in range(shards):
                    await client.js.publish(f"search.shard{i}", body)
            await asyncio.wait_for(complete.wait(), 15)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", help="NATS URL (default: start an embedded server)")
    parser.add_argument("--shards", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main(args.url, args.shards))
