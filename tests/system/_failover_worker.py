"""Helper process of test_failover_processes.py (not a test module): one task worker.

    python tests/system/_failover_worker.py URLS APP CONCURRENCY ACK_WAIT LOG READY

``URLS`` is a comma-separated list of the cluster's client URLs. Runs the task ``work`` of
the app named ``APP`` (``work(i)`` sleeps 0.1 s and returns ``i * 2``) with a worker of
``CONCURRENCY`` slots until killed, on a client with ``replicas=3``. Writes the worker id to
the file ``READY`` once its consumers are bound. Each execution appends to ``LOG`` (flushed
at once, so a SIGKILL loses nothing written):

* ``start <task id> <pid> <attempt> <t>`` when the function starts,
* ``done <task id> <pid> <attempt> <t>`` when it returns (``<t>``: ``time.time()``).
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

import jsflow


async def main(
    urls: str, app_name: str, concurrency: int, ack_wait: float, log_path: str, ready: str
) -> None:
    pid = os.getpid()
    with open(log_path, "a", buffering=1) as log:
        async with await jsflow.connect(urls.split(","), replicas=3, timeout=2.0) as client:
            app = jsflow.App(client, app_name)

            @app.task(name="work", retries=3, backoff=0.1)
            async def work(i: int) -> int:
                task = jsflow.current_task()
                log.write(f"start {task.id} {pid} {task.attempt} {time.time():.6f}\n")
                log.flush()
                await asyncio.sleep(0.1)
                log.write(f"done {task.id} {pid} {task.attempt} {time.time():.6f}\n")
                log.flush()
                return i * 2

            for attempt in range(120):  # the cluster may be electing leaders
                worker = app.worker(concurrency, ack_wait=ack_wait)  # a failed start stops it
                try:
                    await worker.start()
                    break
                except jsflow.JsflowError:
                    if attempt == 119:
                        raise
                    await asyncio.sleep(0.25)
            Path(ready).write_text(f"{worker.id}\n")
            await worker.run()


if __name__ == "__main__":
    urls, app_name, concurrency, ack_wait, log_path, ready = sys.argv[1:7]
    asyncio.run(main(urls, app_name, int(concurrency), float(ack_wait), log_path, ready))
