"""Exceptions of the flow layer (defined in :mod:`jsflow.errors`, re-exported here)."""

from __future__ import annotations

from jsflow.errors import FlowError, StageError, StageTimeoutError

__all__ = ["FlowError", "StageError", "StageTimeoutError"]
