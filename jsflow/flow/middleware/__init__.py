"""Middleware: callables taking a stage and returning a stage, one module each.

Each is a frozen dataclass of options; calling it on a stage wraps the stage::

    stage = Retry(max_retries=3)(Timeout(seconds=2.0)(my_stage))
    FlowHandler(..., middleware=[Tracing(), Logging(), Timeout(5.0)])
"""

from __future__ import annotations

from jsflow.flow.middleware.dedupe import Dedupe, DedupeMark
from jsflow.flow.middleware.logging import Logging
from jsflow.flow.middleware.metrics import Metrics
from jsflow.flow.middleware.rate_limit import RateLimit
from jsflow.flow.middleware.retry import Retry
from jsflow.flow.middleware.timeout import Timeout
from jsflow.flow.middleware.tracing import Tracing

__all__ = ["Dedupe", "DedupeMark", "Logging", "Metrics", "RateLimit", "Retry", "Timeout", "Tracing"]
