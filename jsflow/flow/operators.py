"""Operators: stages built from plain functions (map, filter, flat_map), Split and Batch.

``map_``, ``filter_`` and ``flat_map`` take functions of the message *data* (sync or async)
and return stages. :class:`Split` is a sink routing each output by predicate;
:class:`Batch` is a stage that collects messages into one list.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from jsflow.errors import ConfigError
from jsflow.flow.errors import FlowError
from jsflow.flow.handler import NamedStage, stage_name
from jsflow.flow.message import Message
from jsflow.flow.sink import Sink

if TYPE_CHECKING:
    from jsflow.client import Client

__all__ = ["Batch", "Split", "filter_", "flat_map", "map_"]


async def _call(fn: Callable[[Any], Any], value: Any) -> Any:
    result = fn(value)
    if inspect.isawaitable(result):
        result = await result
    return result


def map_(fn: Callable[[Any], Any]) -> NamedStage:
    """A stage emitting ``fn(data)`` for each message (``fn`` may be async)."""
    if not callable(fn):
        raise ConfigError(f"map_ needs a callable, got {fn!r}")

    async def stage(msg: Message[Any]) -> Any:
        return msg.with_data(await _call(fn, msg.data))

    return NamedStage(f"map:{stage_name(fn)}", stage)


def filter_(predicate: Callable[[Any], Any]) -> NamedStage:
    """A stage passing on the messages whose data satisfies ``predicate`` (may be async)."""
    if not callable(predicate):
        raise ConfigError(f"filter_ needs a callable, got {predicate!r}")

    async def stage(msg: Message[Any]) -> Any:
        return msg if await _call(predicate, msg.data) else None

    return NamedStage(f"filter:{stage_name(predicate)}", stage)


def flat_map(fn: Callable[[Any], Iterable[Any]]) -> NamedStage:
    """A stage emitting every item of ``fn(data)`` as its own message (fan-out)."""
    if not callable(fn):
        raise ConfigError(f"flat_map needs a callable, got {fn!r}")

    async def stage(msg: Message[Any]) -> Any:
        return [msg.with_data(item) for item in await _call(fn, msg.data)]

    return NamedStage(f"flat_map:{stage_name(fn)}", stage)


class Split:
    """A sink sending each output to the sink of the first predicate it satisfies.

    ``routes`` is a list of ``(predicate, sink)``; a predicate receives the output
    :class:`Message`. Outputs matching none go to ``default``, or are dropped when it is
    ``None``.
    """

    def __init__(
        self,
        routes: list[tuple[Callable[[Message[Any]], bool], Sink]],
        default: Sink | None = None,
    ) -> None:
        for route in routes:
            if len(route) != 2 or not callable(route[0]) or not isinstance(route[1], Sink):
                raise ConfigError(f"Split routes are (predicate, sink) pairs, got {route!r}")
        if default is not None and not isinstance(default, Sink):
            raise ConfigError(f"Split default must be a sink, got {default!r}")
        self.routes = list(routes)
        self.default = default

    async def open(self, client: Client) -> None:
        """Open every routed sink."""
        for _, sink in self.routes:
            await sink.open(client)
        if self.default is not None:
            await self.default.open(client)

    def route(self, msg: Message[Any]) -> Sink | None:
        """The sink ``msg`` goes to (``None``: dropped)."""
        for predicate, sink in self.routes:
            if predicate(msg):
                return sink
        return self.default

    async def publish(self, msg: Message[Any], msg_id: str) -> None:
        """Publish ``msg`` to its route."""
        sink = self.route(msg)
        if sink is not None:
            await sink.publish(msg, msg_id)


def _retrieve(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()  # a batch without members: mark its failure as seen


@dataclass(slots=True)
class _Group:
    members: list[Message[Any]] = field(default_factory=list)
    full: asyncio.Event = field(default_factory=asyncio.Event)
    done: asyncio.Future[None] | None = None


@dataclass(frozen=True, slots=True)
class BatchLead:
    """Internal: the combined message a batch leader carries on, and the members' outcome."""

    message: Message[list[Any]]
    done: asyncio.Future[None]


class Batch:
    """A stage collecting up to ``size`` messages, or what came within ``window`` seconds.

    It emits one message whose data is the list of the collected data. The source messages
    of every member are acked only after the batch's output has gone through every later
    stage and sink; if that fails, every member is nak'ed. The first message of a batch
    carries it on (its id and headers are the batch's). A later stage that wants to pass
    the list on whole returns ``msg`` (or ``msg.with_data(...)``): a returned plain list
    fans out. A flow needs ``concurrency`` of at
    least ``size`` to fill batches by count; otherwise they close on the window.
    """

    def __init__(self, size: int, window: float) -> None:
        if size < 1:
            raise ConfigError(f"Batch size must be >= 1, got {size}")
        if not window > 0:
            raise ConfigError(f"Batch window must be positive, got {window}")
        self.size = size
        self.window = window
        self.stage_name = f"batch:{size}"
        self._open: _Group | None = None

    async def join(self, msg: Message[Any]) -> BatchLead | asyncio.Future[None]:
        """Add ``msg``. The first member of a batch waits for it to fill (or the window) and
        gets a :class:`BatchLead`; any other member gets at once the future of the batch's
        outcome, which it must await before its source message is acked.
        """
        group = self._open
        if group is None:
            done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            done.add_done_callback(_retrieve)
            group = self._open = _Group(done=done)
        group.members.append(msg)
        assert group.done is not None
        if len(group.members) >= self.size:
            group.full.set()
            self._open = None
        if len(group.members) > 1:
            return group.done
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.window):
                    await group.full.wait()
        except asyncio.CancelledError:
            if self._open is group:
                self._open = None
            if not group.done.done():
                group.done.set_exception(FlowError("batch leader was cancelled"))
            raise
        if self._open is group:
            self._open = None
        combined = group.members[0].with_data([m.data for m in group.members])
        return BatchLead(combined, group.done)
