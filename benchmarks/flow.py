"""Flow overhead and latency, on an embedded nats-server.

    .venv/bin/python benchmarks/flow.py [--n 20000] [--rate 500] [--seconds 4] [--rounds 1]

1. Throughput: a one-stage no-op FlowHandler vs a raw nats-py ``fetch(100)`` + ack loop over
   the same N messages (msgs/s and the ratio), twice: with a dataclass message type and
   every setting at its default (target >= 1.2x), and tuned (``bytes``,
   ``concurrency=200``). The flow can beat the raw loop: its StreamSource sends its own
   pull requests (``no_wait`` + ``expires``) and collects deliveries in a subscription
   callback, without nats-py ``fetch``'s two tasks and a timer per message (see
   ``jsflow._js.pull.Puller``).
   The raw loop runs on its own plain ``nats.connect(url)`` connection, not on jsflow's
   (whose client has a faster write and reply path): it measures what plain nats-py gets.
2. Latency: end-to-end p50/p99 (publish -> three stages -> sink -> received) at a fixed
   publish rate.

Results go to ``benchmarks/results/flow.json`` (``--json PATH`` to write elsewhere,
``--no-json`` to skip).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import statistics
import time
from typing import Any

import nats.errors
import nats.js
from _common import add_json_options, environment, write_results

import jsflow
from jsflow.flow.pipeline import FlowHandler
from jsflow.flow.sink import StreamSink
from jsflow.flow.source import StreamSource


@dataclasses.dataclass
class Event:
    """The message type of the dataclass variant (a typical small JSON event)."""

    id: int
    kind: str
    amount: float


PAYLOAD = json.dumps(dataclasses.asdict(Event(1, "click", 2.5))).encode()
DEFAULTS_TARGET = 1.2


async def _fill(client: jsflow.Client, stream: str, subject: str, n: int) -> None:
    await client.js.add_stream(name=stream, subjects=[subject])
    payload = PAYLOAD
    for start in range(0, n, 1000):
        await asyncio.gather(
            *(client.js.publish(subject, payload) for _ in range(start, min(n, start + 1000)))
        )


async def raw_loop(
    client: jsflow.Client, raw: nats.js.JetStreamContext, n: int, run: int = 0
) -> float:
    """``fetch(100)`` + ack over ``n`` messages on ``raw``, a plain nats-py connection's
    JetStream context (the stream is filled through ``client``)."""
    await _fill(client, f"RAW{run}", f"raw{run}.in", n)
    sub = await raw.pull_subscribe(f"raw{run}.in", "raw", stream=f"RAW{run}")
    done = 0
    started = time.perf_counter()
    while done < n:
        try:
            msgs = await sub.fetch(100, timeout=1.0)
        except nats.errors.TimeoutError:
            continue
        for msg in msgs:
            await msg.ack()
        done += len(msgs)
    rate = n / (time.perf_counter() - started)
    await sub.unsubscribe()
    return rate


async def flow_loop(client: jsflow.Client, n: int, *, tuned: bool, run: int = 0) -> float:
    """The no-op flow over ``n`` messages: ``tuned`` reads bytes with ``concurrency=200``
    and ``batch=100``; otherwise the message type is a dataclass and every setting is the
    default (what a user writes first)."""
    stream, subject = f"FLOW{int(tuned)}{run}", f"flow{int(tuned)}{run}.in"
    await _fill(client, stream, subject, n)
    done = asyncio.Event()
    count = 0

    async def noop(msg: object) -> None:
        nonlocal count
        count += 1
        if count >= n:
            done.set()

    if tuned:
        flow = FlowHandler(
            client,
            source=StreamSource(stream, subject, "flow", bytes, batch=100),
            stages=[noop],
            concurrency=200,
        )
    else:
        flow = FlowHandler(
            client, source=StreamSource(stream, subject, "flow", Event), stages=[noop]
        )
    started = time.perf_counter()
    async with flow:
        await done.wait()
        elapsed = time.perf_counter() - started
    return n / elapsed


async def latency(client: jsflow.Client, rate: int, seconds: float) -> tuple[float, float, int]:
    async def parse(msg: jsflow.flow.message.Message[bytes]) -> float:
        return float(msg.data)

    async def enrich(msg: jsflow.flow.message.Message[float]) -> dict[str, float]:
        return {"sent": msg.data}

    async def stamp(msg: jsflow.flow.message.Message[dict[str, float]]) -> dict[str, float]:
        return {**msg.data, "done": time.time()}

    flow = FlowHandler(
        client,
        source=StreamSource("LAT", "lat.in", "lat", bytes, batch=50),
        stages=[parse, enrich, stamp],
        sink=StreamSink("lat.out", stream="LATOUT"),
        concurrency=64,
    )
    samples: list[float] = []

    async def on_out(msg: nats.aio.msg.Msg) -> None:
        import json

        body = json.loads(msg.data)
        samples.append(time.time() - body["sent"])

    sub = await client.nc.subscribe("lat.out", cb=on_out)
    total = int(rate * seconds)
    async with flow:
        interval = 1.0 / rate
        t0 = time.perf_counter()
        for i in range(total):
            delay = t0 + i * interval - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            await client.js.publish("lat.in", repr(time.time()).encode())
        deadline = time.perf_counter() + 10
        while len(samples) < total and time.perf_counter() < deadline:
            await asyncio.sleep(0.05)
    await sub.unsubscribe()
    samples.sort()
    p50 = statistics.median(samples) * 1000
    p99 = samples[min(len(samples) - 1, int(len(samples) * 0.99))] * 1000
    return p50, p99, len(samples)


async def _round(
    client: jsflow.Client, raw_js: nats.js.JetStreamContext, n: int, run: int
) -> dict[str, Any]:
    """One throughput round (raw, defaults, tuned), printed; its figures for the JSON."""
    raw = await raw_loop(client, raw_js, n, run)
    print(f"raw nats-py fetch(100)+ack: {raw:,.0f} msgs/s over {n} messages")
    fl = await flow_loop(client, n, tuned=False, run=run)
    print(f"one-stage no-op FlowHandler, dataclass, defaults: {fl:,.0f} msgs/s")
    tuned = await flow_loop(client, n, tuned=True, run=run)
    print(f"one-stage no-op FlowHandler, bytes, concurrency=200: {tuned:,.0f} msgs/s")
    print(
        f"ratio flow/raw: defaults {fl / raw:.2f}x (target >= {DEFAULTS_TARGET:g}x), "
        f"tuned {tuned / raw:.2f}x"
    )
    return {
        "round": run,
        "raw_msgs_per_s": round(raw, 1),
        "defaults_msgs_per_s": round(fl, 1),
        "tuned_msgs_per_s": round(tuned, 1),
        "ratio_defaults": round(fl / raw, 2),
        "ratio_tuned": round(tuned / raw, 2),
        "target_defaults": DEFAULTS_TARGET,
        "met_defaults": fl / raw >= DEFAULTS_TARGET,
    }


async def main(n: int, rate: int, seconds: float, rounds: int) -> dict[str, Any]:
    """Run the rounds and the latency phase, print them; return the JSON payload."""
    per_round: list[dict[str, Any]] = []
    async with jsflow.EmbeddedServer() as server, await jsflow.connect(server.url) as client:
        raw_nc = await nats.connect(server.url)  # plain nats-py, for the raw baseline only
        try:
            raw_js = raw_nc.jetstream()
            for run in range(rounds):  # interleaved: the machine's load changes between them
                per_round.append(await _round(client, raw_js, n, run))
        finally:
            await raw_nc.close()
        p50, p99, got = await latency(client, rate, seconds)
        print(f"3-stage pipeline at {rate} msg/s: p50 {p50:.2f} ms, p99 {p99:.2f} ms ({got} msgs)")
        version = client.nc.connected_server_version
        server_version = f"{version.major}.{version.minor}.{version.patch}"
    return {
        "benchmark": "flow",
        "config": {"n": n, "rate": rate, "seconds": seconds, "rounds": rounds},
        "environment": environment(server_version),
        "rounds": per_round,
        "latency": {
            "rate_per_s": rate,
            "seconds": seconds,
            "p50_ms": round(p50, 3),
            "p99_ms": round(p99, 3),
            "received": got,
        },
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--rate", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--rounds", type=int, default=1, help="throughput rounds (interleaved)")
    add_json_options(parser, "flow")
    args = parser.parse_args()
    payload = asyncio.run(main(args.n, args.rate, args.seconds, args.rounds))
    if not args.no_json:
        path = write_results(args.json, payload)
        print(f"results written to {path}")
