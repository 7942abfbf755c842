"""``Message[T]``: one decoded message as a stage sees it."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from jsflow._js import Msg

__all__ = ["Message"]

T = TypeVar("T")
U = TypeVar("U")


@dataclass(frozen=True, slots=True)
class Message(Generic[T]):
    """A decoded message flowing through a pipeline.

    ``id`` is stable across redeliveries (the publisher's ``Nats-Msg-Id`` when it set one,
    else ``"<stream>:<sequence>"``); ``delivery`` is the attempt number (1 on the first
    delivery); ``correlation_id`` comes from the ``Jsflow-Correlation-Id`` header, or is
    ``id`` when absent, and is carried to every output. ``raw`` is the nats-py message of
    the source (``None`` for messages a stage built).
    """

    data: T
    subject: str
    headers: Mapping[str, str] = field(default_factory=dict)
    id: str = ""
    delivery: int = 1
    correlation_id: str = ""
    sequence: int = 0
    stream: str = ""
    raw: Msg | None = field(default=None, repr=False, compare=False)

    def with_data(self, data: U) -> Message[U]:
        """A copy carrying ``data`` instead (same id, headers and provenance)."""
        return dataclasses.replace(self, data=data)  # type: ignore[arg-type, return-value]

    def with_headers(self, **headers: str) -> Message[T]:
        """A copy with ``headers`` added to (or replacing) the existing ones."""
        return dataclasses.replace(self, headers={**self.headers, **headers})

    def replace(self, **changes: Any) -> Message[T]:
        """A copy with fields changed, like :func:`dataclasses.replace`."""
        return dataclasses.replace(self, **changes)
