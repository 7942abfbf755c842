"""Rate limiting API callers across processes, with counters of what was let through.

    .venv/bin/python examples/rate_limit.py            # starts its own nats-server
    .venv/bin/python examples/rate_limit.py --url nats://127.0.0.1:4222

Two clients (think: two replicas of a web service) share one limit of 5 requests per second
with bursts of 3 for each API key. Each replica receives a flood of requests; the limiter
admits the burst, then one request every 0.2 s, whichever replica asks. Counters (native
server counters) tally admitted and rejected requests per API key. Finally a background job
uses ``acquire`` to wait for its turn instead of being rejected.
"""

from __future__ import annotations

import argparse
import asyncio
import time

import jsflow


async def replica(
    client: jsflow.Client, name: str, api_key: str, started: float, requests: int
) -> None:
    """One service replica handling ``requests`` requests for ``api_key``, 1 every 50 ms."""
    limiter = client.rate_limiter("api", 5.0, per=1.0, burst=3)
    tally = client.counter("api_requests")
    for _ in range(requests):
        decision = await limiter.try_acquire(api_key)
        outcome = "admitted" if decision.allowed else "rejected"
        await tally.add(jsflow.key(api_key, outcome))
        print(
            f"t={time.monotonic() - started:5.2f}s  {name}  {api_key:<8} {outcome:<8} "
            f"remaining={decision.remaining}  retry_after={decision.retry_after:.3f}s"
        )
        await asyncio.sleep(0.05)


async def main(url: str | None) -> None:
    """Run the demo against ``url`` (or an embedded server)."""
    async with (
        jsflow.ensure_server(url) as server_url,
        await jsflow.connect(server_url) as first,
        await jsflow.connect(server_url) as second,
    ):
        print("== two replicas, one limit: 5 req/s, burst 3, per API key ==")
        started = time.monotonic()
        await asyncio.gather(
            replica(first, "replica-1", "alice", started, 12),
            replica(second, "replica-2", "alice", started, 12),
            replica(second, "replica-2", "bob", started, 4),
        )
        tally = first.counter("api_requests")
        print("\n== tallies (native server counters) ==")
        for api_key in ("alice", "bob"):
            admitted = await tally.get(jsflow.key(api_key, "admitted"))
            rejected = await tally.get(jsflow.key(api_key, "rejected"))
            print(f"{api_key:<8} admitted={admitted:<3} rejected={rejected}")

        print("\n== a batch job waits for its turn with acquire() ==")
        limiter = first.rate_limiter("export", 4.0, per=1.0, burst=1)
        started = time.monotonic()
        for page in range(5):
            await limiter.acquire("nightly-export", timeout=5.0)
            print(f"t={time.monotonic() - started:5.2f}s  exported page {page}")
        try:
            await limiter.acquire("nightly-export", cost=1, timeout=0.05)
        except jsflow.RateLimitExceeded as exc:
            print(f"with a 50 ms timeout: {exc}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="NATS server URL (default: start an embedded server)")
    asyncio.run(main(parser.parse_args().url))
