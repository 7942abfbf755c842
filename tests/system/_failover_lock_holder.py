"""Helper process of test_failover_processes.py (not a test module): one lock holder.

    python tests/system/_failover_lock_holder.py URLS NAME TTL OUT GO RELEASE

``URLS`` is a comma-separated list of the cluster's client URLs. Waits until the file ``GO``
exists, acquires the lock ``NAME`` (``ttl=TTL``), then samples ``lock.held`` every few
milliseconds until the file ``RELEASE`` exists, and releases. Every step is one JSON line
appended to ``OUT`` (flushed at once, so a SIGKILL or SIGSTOP loses nothing written):

* ``{"ev": "ready"}`` once connected;
* ``{"ev": "acquired", "t_call", "t_got", "token", "deadline"}``: ``time.time()`` before
  ``acquire()`` was called and once it returned, the fencing token, and the lease deadline;
* ``{"ev": "sample", "t0", "held", "deadline", "t1"}``: ``time.time()`` before and after
  reading ``held``, and the deadline the holder counts on at that moment;
* ``{"ev": "released"}``, ``{"ev": "lost", "error"}`` (release raised LockLostError) or
  ``{"ev": "release_error", "error"}``.

``deadline`` is the wall-clock form of the holder's own lease deadline (the send time of its
last successful write plus ``ttl``): read from the lease object, which a test may do and
a user need not.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from typing import Any

import nats.errors

import jsflow

_TRANSIENT = (jsflow.JsflowError, nats.errors.Error, TimeoutError)


def _deadline(lock: jsflow.Lock) -> float | None:
    held = lock._held  # the lease object: its expires_at is time.monotonic()-based
    if held is None:
        return None
    return time.time() + (held.expires_at - time.monotonic())


async def main(urls: str, name: str, ttl: float, out: str, go: str, release: str) -> None:
    with open(out, "a", buffering=1) as log:

        def emit(**fields: Any) -> None:
            log.write(json.dumps(fields) + "\n")
            log.flush()

        async with await jsflow.connect(urls.split(","), replicas=3, timeout=2.0) as client:
            lock = client.lock(name, ttl=ttl)
            emit(ev="ready", pid=os.getpid())
            for _ in range(1200):  # at most a minute
                if os.path.exists(go):
                    break
                await asyncio.sleep(0.05)
            for _ in range(60):
                t_call = time.time()
                try:
                    got = await lock.acquire(timeout=30)
                except _TRANSIENT as exc:  # leaders being elected: try again
                    emit(ev="acquire_error", error=repr(exc))
                    await asyncio.sleep(0.25)
                    continue
                if got:
                    break
            else:
                emit(ev="never_acquired")
                return
            emit(
                ev="acquired",
                t_call=t_call,
                t_got=time.time(),
                token=lock.fencing_token,
                deadline=_deadline(lock),
            )
            while not os.path.exists(release):
                t0 = time.time()
                held = lock.held
                deadline = _deadline(lock)
                emit(ev="sample", t0=t0, held=held, deadline=deadline, t1=time.time())
                await asyncio.sleep(0.005)
            try:
                await lock.release()
            except jsflow.LockLostError as exc:
                emit(ev="lost", error=repr(exc))
            except Exception as exc:
                emit(ev="release_error", error=repr(exc))
            else:
                emit(ev="released")


if __name__ == "__main__":
    urls, name, ttl, out, go, release = sys.argv[1:7]
    asyncio.run(main(urls, name, float(ttl), out, go, release))
