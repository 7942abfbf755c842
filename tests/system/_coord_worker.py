"""Helper process for multi-process lock tests (not a test module).

    python tests/system/_coord_worker.py URL LOCK_BUCKET LOCK_NAME DATA_BUCKET ROUNDS

Does ROUNDS times: take the lock, read the plain counter key ``count`` of DATA_BUCKET with a
raw get, write it back plus one with a raw put (not atomic: only the lock protects it), and
release. Prints one JSON line: ``[[fencing_token, value_read], ...]``.
"""

from __future__ import annotations

import asyncio
import json
import sys

import jsflow


async def main(url: str, lock_bucket: str, name: str, data_bucket: str, rounds: int) -> None:
    seen: list[list[int]] = []
    async with await jsflow.connect(url) as client:
        data = await client.object_store(data_bucket, int)
        lock = client.lock(name, ttl=5.0, bucket=lock_bucket)
        for _ in range(rounds):
            async with lock:
                entry = await data.get("count")
                value = 0 if entry is None else entry.value
                await asyncio.sleep(0)  # let others interleave if they could
                await data.put("count", value + 1)
                seen.append([lock.fencing_token, value])
    sys.stdout.write(json.dumps(seen) + "\n")


if __name__ == "__main__":
    url, lock_bucket, name, data_bucket, rounds = sys.argv[1:6]
    asyncio.run(main(url, lock_bucket, name, data_bucket, int(rounds)))
