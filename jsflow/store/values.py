"""The store's value types: what a key holds (:class:`Entry`), what happened to it
(:class:`Change`, :class:`Op`), how hard :meth:`ObjectStore.update` retries
(:class:`RetryPolicy`), and :class:`Raw`, the stored bytes of a key at a revision."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Generic, TypeVar

from jsflow._validate import count, duration, one_of, optional_duration
from jsflow.backoff import Backoff
from jsflow.codec import Codec
from jsflow.connection import check_replicas
from jsflow.errors import ConfigError

__all__ = [
    "MIN_TTL",
    "BucketStatus",
    "Change",
    "Entry",
    "Op",
    "Raw",
    "RetryPolicy",
    "StoreOptions",
]

T = TypeVar("T")

MIN_TTL = 1.0
"""The shortest per-key TTL the server accepts (it rejects per-message TTLs under 1 s)."""


class Op(enum.Enum):
    """What a change did to a key."""

    PUT = "PUT"
    DELETE = "DEL"
    PURGE = "PURGE"


@dataclass(frozen=True, slots=True)
class Entry(Generic[T]):
    """A key's value at a revision (the stream sequence of the write)."""

    key: str
    value: T
    revision: int


@dataclass(frozen=True, slots=True)
class Change(Generic[T]):
    """One change of a key, as seen by :meth:`ObjectStore.watch` and ``history``.

    ``value`` is ``None`` for deletes and purges (including server-side TTL expiry).
    """

    key: str
    value: T | None
    revision: int
    op: Op


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Bounds on :meth:`ObjectStore.update` retries after revision conflicts.

    Backoff is exponential with full jitter: attempt ``n`` sleeps a random time in
    ``[0, min(max_backoff, initial_backoff * 2**n)]`` (:attr:`backoff`, the
    :class:`jsflow.backoff.Backoff` every retry in jsflow uses). Retrying stops at
    ``attempts`` or when ``deadline`` seconds have passed, whichever comes first.
    """

    attempts: int = 20
    deadline: float = 10.0
    initial_backoff: float = 0.002
    max_backoff: float = 0.25

    def __post_init__(self) -> None:
        count("RetryPolicy.attempts", self.attempts, minimum=1)
        duration("RetryPolicy.deadline", self.deadline)
        initial = duration("RetryPolicy.initial_backoff", self.initial_backoff, positive=False)
        if duration("RetryPolicy.max_backoff", self.max_backoff, positive=False) < initial:
            raise ConfigError("RetryPolicy needs 0 <= initial_backoff <= max_backoff")

    @property
    def backoff(self) -> Backoff:
        """The waits between retries: retry ``n`` waits up to ``initial_backoff * 2**n``."""
        return Backoff(
            initial=min(self.initial_backoff * 2, self.max_backoff),
            maximum=self.max_backoff,
            jitter=1.0,
        )


@dataclass(frozen=True, slots=True)
class StoreOptions(Generic[T]):
    """How a store is opened (see :meth:`jsflow.Client.object_store`), checked when made,
    before any I/O: ``ttl`` of every key (seconds), ``history`` (revisions kept per key,
    1-64), ``replicas`` (1-5; ``None``: the client's), ``codec`` (``None``: inferred from
    the type), ``max_value_size`` (bytes), ``retry`` (:class:`RetryPolicy` of updates) and
    ``cache_size`` (keys whose last revision is remembered)."""

    ttl: float | None = None
    history: int = 1
    replicas: int | None = None
    codec: Codec[T] | None = None
    max_value_size: int | None = None
    retry: RetryPolicy | None = None
    cache_size: int = 1024

    def __post_init__(self) -> None:
        optional_duration("ttl", self.ttl)
        count("history", self.history, minimum=1, maximum=64)
        if self.replicas is not None:
            check_replicas(self.replicas)
        count("cache_size", self.cache_size, minimum=0)
        if self.max_value_size is not None:
            count("max_value_size", self.max_value_size, minimum=1)
        if self.retry is not None:
            one_of("retry", self.retry, RetryPolicy)


@dataclass(frozen=True, slots=True)
class BucketStatus:
    """A bucket as the server holds it: ``values`` (stored messages, history included),
    ``bytes``, ``keys`` (subjects holding a value or marker), ``history`` (revisions kept
    per key), ``ttl`` (seconds; ``None``: none) and ``replicas``."""

    bucket: str
    values: int
    bytes: int
    keys: int
    history: int
    ttl: float | None
    replicas: int


@dataclass(slots=True)
class Raw:
    """Stored bytes of a key at a revision; ``data is None`` means absent or deleted."""

    revision: int
    data: bytes | None
