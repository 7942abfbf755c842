"""The combining engine behind :meth:`ObjectStore.update`: :class:`Combiner`.

Concurrent updates of one key in one process are queued in arrival order, applied to one
read, and written with one compare-and-set; each caller still gets its own result. On a
conflict the batch is re-read and retried with jittered backoff, bounded by a
:class:`RetryPolicy`, then :class:`ConflictError` is raised.
"""

from __future__ import annotations

import asyncio
import copy
import inspect
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from google.protobuf.message import Message as ProtobufMessage
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    stop_after_delay,
)

from jsflow.errors import CodecError, ConfigError, ConflictError
from jsflow.observability import get_logger, instruments, tracer
from jsflow.store.cache import RevisionCache
from jsflow.store.entries import EntryCodec
from jsflow.store.values import Entry, Raw, RetryPolicy

__all__ = ["Combiner"]


def _copy(value: Any) -> Any:
    """A deep copy of ``value`` for one fn of a batch (protobuf: ``CopyFrom``, without the
    copy module's generic walk, which costs more than the fn itself)."""
    if isinstance(value, ProtobufMessage):
        clone = type(value)()
        clone.CopyFrom(value)
        return clone
    return copy.deepcopy(value)


T = TypeVar("T")
_log = get_logger(__name__)


@dataclass(slots=True)
class _Pending(Generic[T]):
    fn: Callable[[T], T | None]
    future: asyncio.Future[Entry[T]]
    ttl: float | None


@dataclass(slots=True)
class _Slot(Generic[T]):
    pending: list[_Pending[T]] = field(default_factory=list)
    task: asyncio.Task[None] | None = None


class _Conflict(Exception):
    """Internal: a compare-and-set lost; carries whether the base came from the cache."""

    def __init__(self, from_cache: bool, revision: int) -> None:
        self.from_cache = from_cache
        self.revision = revision


def _same_kind(result: object, state: object) -> bool:
    """Whether an update fn's return value can replace ``state`` (ints may replace floats)."""
    if isinstance(result, type(state)):
        return True
    return isinstance(state, float) and isinstance(result, int) and not isinstance(result, bool)


class Combiner(Generic[T]):
    """The update queues of one store's keys of ``bucket``, read and written through
    ``cache``, retrying as the store's current ``retry()`` policy says.

    A key's entry in ``cache`` is the first base an update tries; a lost compare-and-set
    drops it.
    """

    def __init__(
        self,
        bucket: str,
        entries: EntryCodec[T],
        cache: RevisionCache,
        retry: Callable[[], RetryPolicy],
    ) -> None:
        self._bucket = bucket
        self._labels = {"bucket": bucket}  # of the store's OpenTelemetry instruments
        self._entries = entries
        self._cache = cache
        self._retry = retry
        self._slots: dict[str, _Slot[T]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    async def update(self, key: str, fn: Callable[[T], T | None], ttl: float | None) -> Entry[T]:
        """Apply ``fn`` (validated) to ``key`` combined with concurrent updates of the key:
        see :meth:`ObjectStore.update`."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Entry[T]] = loop.create_future()
        pending = _Pending(fn, future, ttl)
        slot = self._slots.get(key)
        if slot is not None:  # another update of this key is in flight: join the queue
            slot.pending.append(pending)
            if slot.task is None:
                slot.task = self._spawn(self._drain(key, slot))
            # Cancelling this caller cancels ``future``: a batch not yet applied skips it.
            return await future
        slot = self._slots[key] = _Slot(pending=[pending])
        slot.task = asyncio.current_task()  # marks the key busy while this caller works
        try:
            # Callers woken in the same loop turn (say, by the previous batch) join here.
            await asyncio.sleep(0)
            if len(slot.pending) > 1:
                slot.task = self._spawn(self._drain(key, slot))
                return await future
            # Alone: write in the caller's own task, one round trip when the cache is fresh.
            slot.pending.clear()
            await self._apply_batch(key, [pending], ttl)
        except asyncio.CancelledError:
            # Still queued (cancelled in the sleep above): the drain must not apply it later.
            future.cancel()
            raise
        finally:
            if slot.task is asyncio.current_task():
                slot.task = None
                if slot.pending:
                    slot.task = self._spawn(self._drain(key, slot))
                elif self._slots.get(key) is slot:
                    del self._slots[key]
        return future.result()

    async def aclose(self) -> None:
        """Wait for the in-flight combined updates."""
        while self._tasks:  # a caller finishing its own write may still hand a queue over
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _drain(self, key: str, slot: _Slot[T]) -> None:
        try:
            while slot.pending:
                # Callers cancelled while queued (their future is cancelled) are skipped.
                slot.pending[:] = [op for op in slot.pending if not op.future.done()]
                if not slot.pending:
                    break
                ttl = slot.pending[0].ttl
                n = 1
                while n < len(slot.pending) and slot.pending[n].ttl == ttl:
                    n += 1
                batch, slot.pending[:n] = slot.pending[:n], []
                try:
                    await self._apply_batch(key, batch, ttl)
                except BaseException as exc:
                    for op in batch:
                        if not op.future.done():
                            if isinstance(exc, asyncio.CancelledError):
                                op.future.cancel()
                            else:
                                op.future.set_exception(exc)
                    if isinstance(exc, asyncio.CancelledError):
                        raise
        finally:
            slot.task = None
            if slot.pending:  # cancelled with work queued: fail it rather than hang
                for op in slot.pending:
                    if not op.future.done():
                        op.future.cancel()
                slot.pending.clear()
            if self._slots.get(key) is slot:
                del self._slots[key]

    def _apply(
        self, key: str, raw: Raw, batch: list[_Pending[T]]
    ) -> tuple[T | None, list[T | BaseException]]:
        entries = self._entries
        state = entries.decode(key, raw) if raw.data is not None else entries.new()
        outcomes: list[T | BaseException] = []
        last_ok: T | None = None
        single = len(batch) == 1
        for op in batch:
            if op.future.done():  # its caller was cancelled meanwhile: do not apply its fn
                outcomes.append(asyncio.CancelledError())
                continue
            candidate = state if single else _copy(state)
            try:
                result = op.fn(candidate)
                if inspect.isawaitable(result):
                    if inspect.iscoroutine(result):
                        result.close()
                    raise ConfigError("update() fn must be a plain function, not async")
                if result is not None and not _same_kind(result, candidate):
                    raise CodecError(
                        f"update() fn returned {type(result).__name__}; it must change its "
                        f"argument in place and return None, or return a new "
                        f"{type(candidate).__name__}",
                        bucket=self._bucket,
                        key=key,
                    )
            except Exception as exc:
                outcomes.append(exc)
                continue
            state = candidate if result is None else result
            outcomes.append(state)
            last_ok = state
        return last_ok, outcomes

    async def _attempt(
        self, key: str, batch: list[_Pending[T]], ttl: float | None, base: Raw, from_cache: bool
    ) -> None:
        """Apply the batch to ``base`` and compare-and-set it; settles every future or raises."""
        last_ok, outcomes = self._apply(key, base, batch)
        revision = base.revision
        if last_ok is not None:  # else every fn raised: nothing to write
            data = self._entries.encode(key, last_ok)
            try:
                revision = await self._cache.write(key, data, expected=base.revision, ttl=ttl)
            except ConflictError:
                self._cache.forget(key)
                raise _Conflict(from_cache, base.revision) from None
        for op, outcome in zip(batch, outcomes, strict=True):
            if op.future.done():  # cancelled while the write was in flight
                continue
            if isinstance(outcome, BaseException):
                op.future.set_exception(outcome)
            else:
                op.future.set_result(Entry(key, outcome, revision))

    def _count(self, batch: list[_Pending[T]], *, attempts: int, failed: bool) -> None:
        """Record one combined write: its size, and the conflicts and retries it took."""
        meters = instruments()
        labels = self._labels
        meters.store_batch_size.record(len(batch), labels)
        conflicts = attempts - (0 if failed else 1)
        if conflicts:
            meters.store_conflicts.add(conflicts, labels)
        if attempts > 1:
            meters.store_retries.add(attempts - 1, labels)
        if not failed:
            meters.store_updates.add(len(batch), labels)

    async def _apply_batch(self, key: str, batch: list[_Pending[T]], ttl: float | None) -> None:
        policy = self._retry()
        bucket = self._bucket
        started = time.monotonic()
        with tracer().start_as_current_span("jsflow.store.update") as span:
            span.set_attribute("jsflow.bucket", bucket)
            span.set_attribute("jsflow.key", key)
            span.set_attribute("jsflow.batch_size", len(batch))
            cached = self._cache.get(key)
            try:  # first attempt outside tenacity: the common, uncontended case
                base = cached if cached is not None else await self._cache.read(key)
                await self._attempt(key, batch, ttl, base, from_cache=cached is not None)
                span.set_attribute("jsflow.attempts", 1)
                span.set_attribute("jsflow.conflicts", 0)
                self._count(batch, attempts=1, failed=False)
                return
            except _Conflict as exc:
                first = exc
                conflict: _Conflict | None = exc
            attempts = 1
            if policy.attempts > 1 and time.monotonic() - started < policy.deadline:
                if not first.from_cache:  # real contention: back off before re-reading
                    await asyncio.sleep(random.uniform(0, policy.initial_backoff))

                backoff = policy.backoff

                def wait(state: RetryCallState) -> float:
                    return backoff.delay(state.attempt_number)

                retrying = AsyncRetrying(
                    stop=stop_after_attempt(policy.attempts - 1)
                    | stop_after_delay(max(0.0, policy.deadline - (time.monotonic() - started))),
                    wait=wait,
                    retry=retry_if_exception_type(_Conflict),
                    reraise=True,
                )
                try:
                    async for attempt in retrying:
                        with attempt:
                            attempts += 1
                            base = await self._cache.read(key)
                            await self._attempt(key, batch, ttl, base, from_cache=False)
                    conflict = None
                except _Conflict as last:
                    conflict = last
            span.set_attribute("jsflow.attempts", attempts)
            span.set_attribute("jsflow.conflicts", attempts - (0 if conflict else 1))
            self._count(batch, attempts=attempts, failed=conflict is not None)
            if conflict is not None:
                _log.debug(
                    "store.update.gave_up",
                    bucket=bucket,
                    key=key,
                    attempts=attempts,
                    seconds=round(time.monotonic() - started, 3),
                )
                raise ConflictError(bucket, key, attempts=attempts, revision=conflict.revision)
            _log.debug(
                "store.update.retried",
                bucket=bucket,
                key=key,
                attempts=attempts,
                batch=len(batch),
            )
