"""Helper process of test_failover_processes.py (not a test module): one limiter client.

    python tests/system/_failover_limiter.py URLS NAME KEY RATE BURST OUT GO STOP

``URLS`` is a comma-separated list of the cluster's client URLs. Once the file ``GO``
exists, calls ``try_acquire(KEY)`` on ``client.rate_limiter(NAME, RATE, per=1.0,
burst=BURST)`` in a loop until the file ``STOP`` exists (at most a minute). Appends one line
per event to ``OUT`` (flushed at once):

* ``ready`` once connected;
* ``a <t>`` for each admitted unit, ``<t>`` being the limiter clock's reading that the
  admitting decision used (the GCRA guarantee is about those times);
* ``e <t> <error>`` for a decision that raised (leaders being elected): its write may or may
  not have been applied;
* ``end <admitted> <denied> <errors>`` when it stops.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time

import nats.errors

import jsflow

_TRANSIENT = (jsflow.JsflowError, nats.errors.Error, TimeoutError)


async def main(
    urls: str, name: str, key: str, rate: float, burst: int, out: str, go: str, stop: str
) -> None:
    last = [0.0]

    def clock() -> float:
        # One decision at a time in this process: the last reading is the deciding one (a
        # decision re-run after a conflict reads the clock again).
        last[0] = time.time()
        return last[0]

    with open(out, "a", buffering=1) as log:
        async with await jsflow.connect(urls.split(","), replicas=3, timeout=2.0) as client:
            limiter = client.rate_limiter(name, rate, per=1.0, burst=burst, clock=clock)
            log.write("ready\n")
            log.flush()
            for _ in range(1200):  # at most a minute
                if os.path.exists(go):
                    break
                await asyncio.sleep(0.05)
            admitted = denied = errors = 0
            ends = time.monotonic() + 60
            while not os.path.exists(stop) and time.monotonic() < ends:
                try:
                    decision = await limiter.try_acquire(key)
                except _TRANSIENT as exc:
                    errors += 1
                    log.write(f"e {time.time():.6f} {type(exc).__name__}\n")
                    log.flush()
                    await asyncio.sleep(0.05)
                    continue
                if decision.allowed:
                    admitted += 1
                    log.write(f"a {last[0]:.6f}\n")
                    log.flush()
                else:
                    denied += 1
                # A denial decided on the state known here does no I/O: yield to the loop.
                await asyncio.sleep(0.002)
            log.write(f"end {admitted} {denied} {errors}\n")
            log.flush()


if __name__ == "__main__":
    urls, name, key, rate, burst, out, go, stop = sys.argv[1:9]
    asyncio.run(main(urls, name, key, float(rate), int(burst), out, go, stop))
