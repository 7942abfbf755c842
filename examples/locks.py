"""Workers in separate clients contend for one lock; fencing tokens order their writes.

    .venv/bin/python examples/locks.py [--url nats://...] [--workers 4] [--rounds 3]

Starts an embedded nats-server unless --url is given. Each worker takes the lock, "writes"
to a ledger that rejects any write whose fencing token is not larger than the last one it
accepted (what a fenced storage system does), and releases. Then a holder that stops
renewing shows what a paused process experiences: its lease expires, someone else takes
over, and its release raises LockLostError instead of deleting the new holder's lease.
"""

from __future__ import annotations

import argparse
import asyncio
import logging

import jsflow


class FencedLedger:
    """A resource that only accepts writes with a larger fencing token than the last one."""

    def __init__(self) -> None:
        self.last_token = 0
        self.entries: list[str] = []

    def write(self, token: int, text: str) -> None:
        if token <= self.last_token:
            raise RuntimeError(f"stale token {token} (last {self.last_token}): rejected")
        self.last_token = token
        self.entries.append(text)


async def worker(url: str, name: str, rounds: int, ledger: FencedLedger) -> None:
    async with await jsflow.connect(url) as client:
        lock = client.lock("example.ledger", ttl=5)
        for i in range(rounds):
            async with lock:
                print(f"  {name} holds the lock, fencing token {lock.fencing_token}")
                await asyncio.sleep(0.05)  # the critical section
                ledger.write(lock.fencing_token, f"{name} round {i}")


async def paused_holder(url: str) -> None:
    async with await jsflow.connect(url) as client:
        paused = client.lock("example.paused", ttl=1, auto_renew=False)
        await paused.acquire()
        print(f"paused holder took example.paused (token {paused.fencing_token}), stops renewing")
        other = client.lock("example.paused", ttl=5)
        await other.acquire(timeout=10)
        print(f"after the 1 s lease expired another holder took it (token {other.fencing_token})")
        try:
            await paused.release()
        except jsflow.LockLostError as exc:
            print(f"paused holder's release: LockLostError: {exc}")
        holder = await other.holder()
        intact = holder is not None and holder.owner == other.owner
        print(f"the new holder's lease is intact: {intact}")
        await other.release()


async def main(url: str | None, workers: int, rounds: int) -> None:
    async with jsflow.ensure_server(url) as resolved:
        if not url:
            print(f"started nats-server at {resolved}")
        ledger = FencedLedger()
        print(f"{workers} workers x {rounds} rounds contend for lock 'example.ledger'")
        await asyncio.gather(
            *(worker(resolved, f"worker-{i}", rounds, ledger) for i in range(workers))
        )
        print(f"ledger accepted {len(ledger.entries)} writes, last token {ledger.last_token}")
        await paused_holder(resolved)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="NATS server URL (default: start an embedded one)")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
    asyncio.run(main(args.url, args.workers, args.rounds))
