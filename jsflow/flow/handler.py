"""What a stage is: a :class:`MessageHandler` or a plain async function of the same shape.

A stage receives a :class:`Message` and returns one output, a list of outputs (fan-out), or
``None`` (filter). An output may be a plain value (carried on a copy of the input message)
or a :class:`Message` (used as is, e.g. to change headers). A middleware is any callable
taking a stage and returning a stage.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeAlias, TypeVar, runtime_checkable

from jsflow.errors import ConfigError
from jsflow.flow.errors import StageError
from jsflow.flow.message import Message

__all__ = [
    "MessageHandler",
    "Middleware",
    "NamedStage",
    "Stage",
    "StageFn",
    "as_stage_fn",
    "outputs_of",
    "stage_name",
]

In = TypeVar("In")
Out_co = TypeVar("Out_co", covariant=True)


@runtime_checkable
class MessageHandler(Protocol[In, Out_co]):
    """A stage as an object: ``handle`` returns an output, a list (fan-out) or ``None``."""

    async def handle(self, msg: Message[In]) -> Out_co | list[Out_co] | None:
        """Process one message."""
        ...


StageFn: TypeAlias = Callable[[Message[Any]], Awaitable[Any]]
Stage: TypeAlias = MessageHandler[Any, Any] | StageFn
Middleware: TypeAlias = Callable[[StageFn], StageFn]


class NamedStage:
    """An async callable stage with a name (what middleware returns)."""

    def __init__(self, name: str, fn: StageFn) -> None:
        self.stage_name = name
        self._fn = fn

    async def __call__(self, msg: Message[Any]) -> Any:
        """Run the wrapped stage."""
        return await self._fn(msg)

    def __repr__(self) -> str:
        return f"NamedStage({self.stage_name!r})"


def stage_name(stage: object) -> str:
    """A readable name for a stage (used in logs, spans and dead-letter headers)."""
    name = getattr(stage, "stage_name", None)
    if isinstance(name, str):
        return name
    if isinstance(stage, MessageHandler) and not callable(stage):
        return type(stage).__name__
    fn_name = getattr(stage, "__name__", None)
    if isinstance(fn_name, str):
        return fn_name
    return type(stage).__name__


def as_stage_fn(stage: object) -> StageFn:
    """Adapt a :class:`MessageHandler` or async callable to one async function (checked)."""
    if isinstance(stage, NamedStage):
        return stage
    handle = getattr(stage, "handle", None)
    fn: Callable[[Message[Any]], Any]
    if callable(handle):
        fn = handle
    elif callable(stage):
        fn = stage
    else:
        raise ConfigError(f"a stage must be a MessageHandler or an async callable, got {stage!r}")
    name = stage_name(stage)
    if inspect.iscoroutinefunction(fn):
        return NamedStage(name, fn)  # always returns a coroutine: no per-call check needed

    async def call(msg: Message[Any]) -> Any:
        result = fn(msg)
        if not hasattr(result, "__await__") and not inspect.isawaitable(result):
            raise StageError(f"stage {name!r} must be async; it returned {type(result).__name__}")
        return await result

    return NamedStage(name, call)


def outputs_of(msg: Message[Any], result: Any) -> list[Message[Any]]:
    """Turn what a stage returned into output messages (``None`` -> none, list -> many)."""
    if result is None:
        return []
    items = result if isinstance(result, list) else [result]
    return [item if isinstance(item, Message) else msg.with_data(item) for item in items]
