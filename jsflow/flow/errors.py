"""Exceptions of the flow layer, each in a family of :mod:`jsflow.errors`."""

from __future__ import annotations

from jsflow.errors import JsflowError, RequestTimeoutError

__all__ = ["FlowError", "StageError", "StageTimeoutError"]


class FlowError(JsflowError):
    """A flow could not run: misuse of its lifecycle, or its fetch loop gave up."""


class StageError(FlowError):
    """A stage returned something that is not a stage result (e.g. a non-awaitable)."""


class StageTimeoutError(FlowError, RequestTimeoutError):
    """A stage wrapped in :class:`jsflow.flow.middleware.timeout.Timeout` ran past its limit."""

    def __init__(self, stage: str, seconds: float) -> None:
        super().__init__(f"stage {stage!r} did not finish within {seconds}s")
        self.stage = stage
        self.seconds = seconds
