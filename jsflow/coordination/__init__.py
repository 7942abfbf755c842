"""Coordination primitives built on ObjectStore.

Locks, semaphores, rate limiters, counters, wait groups and elections. Their state is protobuf
(``proto/jsflow/v1``) in KV buckets; waiters share one watch per client and bucket.
"""

from __future__ import annotations

from jsflow.coordination.counter import Counter
from jsflow.coordination.election import Election
from jsflow.coordination.lock import Lock
from jsflow.coordination.rate_limiter import Decision, RateLimiter
from jsflow.coordination.semaphore import Semaphore
from jsflow.coordination.wait_group import NegativeCountError, WaitGroup

__all__ = [
    "Counter",
    "Decision",
    "Election",
    "Lock",
    "NegativeCountError",
    "RateLimiter",
    "Semaphore",
    "WaitGroup",
]
