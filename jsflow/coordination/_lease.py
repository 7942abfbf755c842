"""Leases in a KV bucket: the machinery under Lock, Semaphore and Election.

A lease is a key written with a per-key TTL, so the server forgets a dead holder's lease
without trusting anyone's clock. Acquiring is create-if-absent; the holder renews with a
compare-and-set on its own revision every ``ttl / 3``; releasing deletes with a
compare-and-set, so it never removes another holder's lease.

Every write of a held lease (renewal, :meth:`HeldLease.extend`) is that one compare-and-set,
rewriting the same value (so the fencing token stays) with a new TTL: the lease's new
length, rounded up to whole seconds on the wire as the server keeps them. The holder counts
on the length itself from the write's send, which the server's TTL (from its receipt,
rounded up) always outlasts. A renewal never shortens the lease: it writes ``ttl`` or what
remains, whichever is longer; only an extension with ``replace_ttl`` shortens it.

The fencing token of a holder is the revision (stream sequence) of the write that created its
lease. The server assigns it atomically with the create, every later write of the bucket gets
a larger one, and it is never reused, not even after the lease expired. So a holder that took
over after another one's lease ended always has the larger token, which a separate counter
taken before or after the create cannot guarantee.

Waiters never poll and never cost the server a consumer: they register on the store's one
shared watch (:meth:`ObjectStore.listen`) before reading, and in one process only one waiter
per lease name contends at a time (the others queue in process, first come first served).

The uncontended path is kept to the two round trips the protocol needs (create, delete) and
no background task: the first attempt runs in the caller's task before any listener is
registered (a waiter registers only after it failed, then attempts once more, so no release
is missed), and renewal is a timer that starts a task only when a renewal is due.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, TypeVar

from jsflow._proto.common_pb2 import Lease
from jsflow._validate import MAX_DURATION, check_name, duration, optional_duration
from jsflow.connection import check_replicas
from jsflow.errors import (
    ConfigError,
    ConflictError,
    JsflowError,
    KeyExistsError,
    LockLostError,
    LockTimeoutError,
    NotHeldError,
)
from jsflow.keys import validate_key
from jsflow.observability import get_logger, instruments, tracer
from jsflow.store import MIN_TTL, KeyListener, ObjectStore, StoreOptions, open_store

if TYPE_CHECKING:
    from jsflow.connection import Connection

__all__ = [
    "HeldLease",
    "LeasedPrimitive",
    "MIN_TTL",
    "check_additional",
    "check_timeout",
    "check_ttl",
    "contend",
    "has_local_waiters",
    "new_owner_id",
    "try_create_lease",
]

R = TypeVar("R")
_log = get_logger(__name__)


_owner_prefix: dict[int, str] = {}  # pid -> "host:pid:random", recomputed after a fork
_owner_serial = itertools.count()


def new_owner_id() -> str:
    """A holder id unique to this object: host, process, a random part and a serial.

    Host, pid and the random part are computed once per process (again after a fork); the
    serial makes each id distinct, so no system call is paid per lock object.
    """
    pid = os.getpid()
    prefix = _owner_prefix.get(pid)
    if prefix is None:
        _owner_prefix.clear()
        prefix = _owner_prefix[pid] = f"{socket.gethostname()}:{pid}:{uuid.uuid4().hex[:8]}"
    return f"{prefix}-{next(_owner_serial):x}"


def check_ttl(ttl: float) -> float:
    """Return ``ttl`` as a float, or raise :class:`ConfigError` when it is not a usable lease
    (a finite number of seconds, at least the server's minimum of one second)."""
    return duration("ttl", ttl, minimum=MIN_TTL, positive=False)


def check_additional(additional: float, replace_ttl: bool) -> float:
    """Return ``additional`` (seconds of an extension) as a float, or raise
    :class:`ConfigError`: a finite number > 0 and at most a century; with ``replace_ttl``
    (it becomes the whole lease) at least the server's minimum TTL of one second."""
    if not isinstance(replace_ttl, bool):
        raise ConfigError(f"replace_ttl must be a bool, got {replace_ttl!r}")
    if replace_ttl:
        return duration("additional", additional, minimum=MIN_TTL, positive=False)
    return duration("additional", additional)


def check_timeout(timeout: float | None) -> float | None:
    """Return ``timeout`` or raise :class:`ConfigError` when it is negative or not a number."""
    return optional_duration("timeout", timeout, positive=False)


def check_owner(owner: str | None) -> str:
    """Return ``owner`` or a fresh id; raise :class:`ConfigError` for an empty one."""
    if owner is None:
        return new_owner_id()
    if not isinstance(owner, str) or not owner:
        raise ConfigError(f"owner must be a non-empty str, got {owner!r}")
    return owner


async def try_create_lease(
    store: ObjectStore[Lease],
    key: str,
    owner: str,
    ttl: float,
    lost: asyncio.Event | None = None,
) -> HeldLease | None:
    """Create the lease ``key`` if it is free (absent, deleted or expired); else ``None``.

    ``lost`` is the event the returned :class:`HeldLease` sets when it learns of its loss.
    """
    lease = Lease(owner=owner, ttl_seconds=ttl, acquired_at=time.time())
    sent = time.monotonic()  # the server's ttl runs from (after) here, not from the reply
    try:
        entry = await store.create(key, lease, ttl=ttl)
    except KeyExistsError:
        return None
    except asyncio.CancelledError:
        # The create may have reached the server: leave no lease nobody knows about.
        await _undo_create(store, key, lease, ttl)
        raise
    lease.fencing_token = entry.revision
    return HeldLease(store, key, lease, entry.revision, ttl, lost=lost, written_at=sent)


async def _undo_create(store: ObjectStore[Lease], key: str, lease: Lease, ttl: float) -> None:
    """Delete the lease ``lease`` if a create cancelled midway left it on the server.

    Whether the cancelled create was applied is unknown, and a read could overtake it. So
    create once more: writes of one connection to one stream apply in order, so once this one
    is answered the first one was applied or dropped. If this create wins, nobody holds the
    key: delete that. If the key exists, delete it only if it holds exactly ``lease`` (owner
    and acquisition time), with a compare-and-set on the revision read. Best effort and
    bounded (a few requests, each under the client's timeout); a lease it cannot remove
    expires with its ttl.
    """
    try:
        try:
            entry = await store.create(key, lease, ttl=ttl)
        except KeyExistsError:
            current = await store.get(key)
            if current is None or current.value != lease:
                return
            await store.delete(key, revision=current.revision)
        else:
            await store.delete(key, revision=entry.revision)
    except (JsflowError, asyncio.CancelledError) as exc:
        _log.warning("lease.undo_failed", bucket=store.bucket, key=key, error=repr(exc))


class HeldLease:
    """A lease this process holds: renews it, notices its loss, and releases it safely."""

    def __init__(
        self,
        store: ObjectStore[Lease],
        key: str,
        lease: Lease,
        revision: int,
        ttl: float,
        *,
        lost: asyncio.Event | None = None,
        written_at: float | None = None,
    ) -> None:
        """``written_at``: ``time.monotonic()`` before the write that created the lease."""
        self.store = store
        self.key = key
        self.lease = lease
        self.revision = revision
        self.ttl = ttl
        self.lost = lost if lost is not None else asyncio.Event()
        self._released = False
        self._stopped = False
        self._io = asyncio.Lock()
        self._timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None
        # When the last successful write was *sent*, and the lease length it wrote: the lease
        # surely lasts until their sum (the server keeps the length rounded up to whole
        # seconds from its receipt, which is later).
        self._renewed_at = time.monotonic() if written_at is None else written_at
        self._length = ttl
        self._expiry: asyncio.TimerHandle | None = None
        self._arm_expiry()

    @property
    def expires_at(self) -> float:
        """``time.monotonic()`` until which this holder counts on the lease: the send time of
        its last successful write plus the length it wrote (``ttl``, unless extended), never
        later than the server keeps it."""
        return self._renewed_at + self._length

    @property
    def held(self) -> bool:
        """Whether the lease is neither released nor known to be lost, and its ttl since the
        last successful write has not run out."""
        return not self._released and not self.lost.is_set() and time.monotonic() < self.expires_at

    def _arm_expiry(self) -> None:
        """Set :attr:`lost` once :attr:`expires_at` passes without a successful renewal."""
        if self._expiry is not None:
            self._expiry.cancel()
        delay = max(0.0, self.expires_at - time.monotonic())
        self._expiry = asyncio.get_running_loop().call_later(delay, self._expired)

    def _expired(self) -> None:
        self._expiry = None
        if self._released or self.lost.is_set():
            return
        if time.monotonic() < self.expires_at:  # renewed meanwhile
            self._arm_expiry()
            return
        self._mark_lost(f"not renewed within its lease of {self._length:g}s")

    @property
    def fencing_token(self) -> int:
        """The revision that created this lease (see the module docstring)."""
        return int(self.lease.fencing_token)

    def start_renewal(self) -> None:
        """Renew the lease every ``ttl / 3`` seconds until :meth:`stop_renewal` or release
        (more often while an extension with ``replace_ttl`` made it shorter than ``ttl``).

        A timer until a renewal is due; only then a task (owned here, awaited on stop).
        """
        if self._timer is None and self._task is None and not self._stopped:
            self._schedule()

    def _schedule(self) -> None:
        delay = min(self.ttl, self._length) / 3
        self._timer = asyncio.get_running_loop().call_later(delay, self._renewal_due)

    def _renewal_due(self) -> None:
        self._timer = None
        if not self._stopped:
            self._task = asyncio.get_running_loop().create_task(self._renew_once())

    def _mark_lost(self, why: str) -> LockLostError:
        if not self.lost.is_set():
            instruments().lock_lost.add(1, {"bucket": self.store.bucket})
        self.lost.set()
        _log.warning("lease.lost", bucket=self.store.bucket, key=self.key, why=why)
        return LockLostError(
            f"lease {self.key!r} in bucket {self.store.bucket!r} is no longer held by "
            f"{self.lease.owner!r}: {why}",
            name=self.key,
            bucket=self.store.bucket,
        )

    async def renew(self) -> None:
        """Make the lease last ``ttl`` from now, or keep what remains when that is longer
        (a renewal never shortens an extended lease): a compare-and-set on its own revision.

        Raises :class:`LockLostError` (and sets :attr:`lost`) when the lease ran out or
        someone else wrote the key since.
        """
        await self._write(lambda remaining: max(self.ttl, remaining), "renewal")

    async def extend(self, additional: float, *, replace_ttl: bool = False) -> None:
        """Add ``additional`` seconds to what remains of the lease (``replace_ttl``: make it
        last ``additional`` seconds from now), as redis-py's ``Lock.extend``.

        One compare-and-set on the lease's revision; the value and its fencing token stay.
        ``additional`` must be checked by the caller (:func:`check_additional`). Raises
        :class:`LockLostError` (and sets :attr:`lost`) when the lease ran out or someone else
        wrote the key since.
        """
        if replace_ttl:
            await self._write(lambda remaining: additional, "extension")
        else:
            await self._write(lambda remaining: remaining + additional, "extension")

    async def _write(self, length: Callable[[float], float], what: str) -> None:
        """Rewrite the lease with a compare-and-set on its revision, lasting ``length(r)``
        seconds from the send, ``r`` being what remains of it then (at least the server's
        minimum TTL, at most a century)."""
        async with self._io:
            if self.lost.is_set() or self._released:
                raise LockLostError(
                    f"lease {self.key!r} was already lost or released",
                    name=self.key,
                    bucket=self.store.bucket,
                )
            sent = time.monotonic()
            remaining = self.expires_at - sent
            if remaining <= 0:  # the server may have freed it: never write it back to life
                raise self._mark_lost(f"it ran out before {what}")
            new_length = min(MAX_DURATION, max(MIN_TTL, length(remaining)))
            try:
                entry = await self.store.compare_and_set(
                    self.key, self.lease, self.revision, ttl=new_length
                )
            except ConflictError:
                raise self._mark_lost(f"it expired or was taken over before {what}") from None
            self.revision = entry.revision
            self._renewed_at = sent
            self._length = new_length
            if not self._released and not self.lost.is_set():
                self._arm_expiry()
                if self._timer is not None:  # renewing: keep the cadence of the new length
                    self._timer.cancel()
                    self._schedule()

    async def _renew_once(self) -> None:
        try:
            await self.renew()
        except LockLostError:
            return
        except JsflowError as exc:  # connection trouble: keep trying while it may be alive
            _log.warning("lease.renew_failed", key=self.key, error=repr(exc))
            if time.monotonic() >= self.expires_at:
                self._mark_lost(f"could not renew before the lease ran out ({exc})")
                return
        except Exception as exc:  # a bug, not the server: stop, and say the lease is lost
            self._mark_lost(f"renewal failed unexpectedly: {exc!r}")
            return
        finally:
            self._task = None
        if not self._stopped:
            self._schedule()

    async def stop_renewal(self) -> None:
        """Stop renewing and wait for a renewal in flight (it completes first)."""
        self._stopped = True
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
        task = self._task
        if task is not None:
            await asyncio.shield(task)  # a cancelled caller must not cancel the renewal write

    async def release(self) -> None:
        """Stop renewing and delete the lease if it is still ours, else :class:`LockLostError`."""
        await self.stop_renewal()
        async with self._io:
            if self._released:
                return
            self._released = True
            expiry, self._expiry = self._expiry, None
            if expiry is not None:
                expiry.cancel()
            if self.lost.is_set():
                raise LockLostError(
                    f"lease {self.key!r} in bucket {self.store.bucket!r} was lost before release",
                    name=self.key,
                    bucket=self.store.bucket,
                )
            try:
                await self.store.delete(self.key, revision=self.revision)
            except ConflictError:
                raise self._mark_lost("it expired or was taken over before release") from None


@dataclass(slots=True)
class _Gate:
    """Waiters of one lease name in one process take turns contending."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0


class _Gates(dict[tuple[str, str], _Gate]):
    """Per connection: the gates of callers waiting in this process, by (bucket, gate id)."""


async def _take(lock: asyncio.Lock, remaining: float | None) -> bool:
    if remaining is None or not lock.locked():  # free: acquire() takes it without waiting
        await lock.acquire()
        return True
    try:
        async with asyncio.timeout(max(remaining, 0.0)):
            await lock.acquire()
    except TimeoutError:
        return False
    return True


async def _wait_any(listeners: Sequence[KeyListener[Lease]], timeout: float) -> None:
    if len(listeners) == 1:
        await listeners[0].wait(timeout)
        return
    tasks = [asyncio.ensure_future(listener.wait(timeout)) for listener in listeners]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    for task in done:  # a listener whose watch ended (client closed) says so
        if not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]


def has_local_waiters(store: ObjectStore[Any], gate_id: str) -> bool:
    """Whether callers in this process already wait for ``gate_id`` (then newcomers queue)."""
    return (store.bucket, gate_id) in store.connection.shared(_Gates, _Gates)


async def contend(
    store: ObjectStore[Lease],
    gate_id: str,
    keys: Sequence[str],
    attempt: Callable[[], Awaitable[R | None]],
    *,
    timeout: float | None,
    recheck: float,
) -> R | None:
    """Call ``attempt`` until it returns a result, waking on changes of ``keys``.

    Wait for this process's turn for ``gate_id``, register listeners on ``keys`` (before the
    attempt reads, so no change is missed), then attempt, again after each change, and at
    least every ``recheck`` seconds as a safety net. ``None`` when ``timeout`` passes first.
    ``attempt`` must itself be safe to cancel (see :func:`try_create_lease`).
    """
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout

    def remaining() -> float | None:
        return None if deadline is None else deadline - loop.time()

    gates = store.connection.shared(_Gates, _Gates)
    slot = (store.bucket, gate_id)
    gate = gates.setdefault(slot, _Gate())
    gate.users += 1
    try:
        if not await _take(gate.lock, remaining()):
            return None
        try:
            listeners = [await store.listen(k) for k in keys]
            try:
                while True:
                    won = await attempt()
                    if won is not None:
                        return won
                    left = remaining()
                    if left is not None and left <= 0:
                        return None
                    wait = recheck if left is None else min(recheck, left)
                    # Jitter spreads the safety-net rechecks of many processes apart.
                    await _wait_any(listeners, wait * random.uniform(0.8, 1.0))
            finally:
                for listener in listeners:
                    listener.close()
        finally:
            gate.lock.release()
    finally:
        gate.users -= 1
        if gate.users == 0 and gates.get(slot) is gate:
            del gates[slot]


class LeasedPrimitive:
    """What Lock and Semaphore share: one holder per instance, acquire/release, ``async with``.

    An instance holds at most one lease at a time. Tasks sharing one instance take turns in
    process (like :class:`asyncio.Lock`); make one instance per concurrent holder otherwise.
    Subclasses say which keys to wait on and how one attempt tries to take a lease.
    """

    _default_bucket = "jsflow_leases"

    def __init__(
        self,
        client: Connection,
        name: str,
        *,
        ttl: float,
        bucket: str | None = None,
        owner: str | None = None,
        auto_renew: bool = True,
        recheck: float | None = None,
        replicas: int | None = None,
        blocking_timeout: float | None = None,
    ) -> None:
        self._client = client
        # How long ``async with`` waits before LockTimeoutError (None: for as long as it takes).
        self.blocking_timeout = check_timeout(blocking_timeout)
        # Of the bucket when created (default: the client's); an existing one keeps its own.
        self.replicas = None if replicas is None else check_replicas(replicas)
        self.name = validate_key(name)
        self.ttl = check_ttl(ttl)
        self.bucket = check_name("bucket", self._default_bucket if bucket is None else bucket)
        self.owner = check_owner(owner)
        self.auto_renew = bool(auto_renew)
        self.recheck = self.ttl if recheck is None else duration("recheck", recheck)
        self.lost = asyncio.Event()
        """Set as soon as this instance learns that the lease it holds is lost."""
        self._local = asyncio.Lock()
        self._held: HeldLease | None = None
        self._token = 0

    # -- what subclasses provide -----------------------------------------------------------

    def _keys(self) -> Sequence[str]:
        raise NotImplementedError

    async def _attempt(self, store: ObjectStore[Lease]) -> HeldLease | None:
        raise NotImplementedError

    # -- state -----------------------------------------------------------------------------

    @property
    def held(self) -> bool:
        """Whether this instance holds its lease: not released, not known to be lost, and
        before its deadline (the send of the last successful write plus ``ttl``), whatever
        a renewal in flight is doing, so a holder never believes in a lease the server
        may have handed to someone else."""
        return self._held is not None and self._held.held

    @property
    def locked(self) -> bool:
        """Same as :attr:`held` (the :class:`asyncio.Lock` spelling)."""
        return self.held

    @property
    def fencing_token(self) -> int:
        """Token of the latest acquisition (0 before the first): strictly increasing across
        successive holders, so a resource can reject writes from a stale holder."""
        return self._token

    async def _store(self) -> ObjectStore[Lease]:
        return await open_store(
            self._client, self.bucket, Lease, StoreOptions(replicas=self.replicas)
        )

    # -- acquire / release -----------------------------------------------------------------

    async def acquire(self, timeout: float | None = None, blocking: bool = True) -> bool:
        """Take the lease; ``True`` once held, ``False`` when ``timeout`` passed first.

        ``blocking=False`` makes one attempt. Waiting wakes on the lease's changes (release,
        expiry) through the store's shared watch, and re-checks at least every ``recheck``
        seconds. While held the lease is renewed every ``ttl / 3`` (unless ``auto_renew`` is
        off); :attr:`lost` is set when renewal finds it lost.
        """
        timeout = check_timeout(timeout)
        loop = asyncio.get_running_loop()
        started = loop.time()
        if not blocking:
            if self._local.locked():
                return False
            await self._local.acquire()
        elif not await _take(self._local, timeout):
            return False
        try:
            store = await self._store()
            with tracer().start_as_current_span("jsflow.lease.acquire") as span:
                if span.is_recording():
                    span.set_attribute("jsflow.bucket", self.bucket)
                    span.set_attribute("jsflow.name", self.name)
                held = None
                # First attempt at once, with no listener: the uncontended path. Callers of
                # this name already queued in this process go first, though.
                if not blocking or not has_local_waiters(store, self.name):
                    held = await self._attempt(store)
                if held is None and blocking:
                    left = None
                    if timeout is not None:
                        left = timeout - (loop.time() - started)
                    if left is None or left > 0:
                        # Registers listeners, then attempts again: a release between the
                        # attempt above and the registration is not missed.
                        held = await contend(
                            store,
                            self.name,
                            self._keys(),
                            lambda: self._attempt(store),
                            timeout=left,
                            recheck=self.recheck,
                        )
                if span.is_recording():
                    span.set_attribute("jsflow.acquired", held is not None)
        except BaseException:
            self._local.release()
            raise
        if held is None:
            self._local.release()
            return False
        meters = instruments()
        labels = {"bucket": self.bucket}
        meters.lock_wait_time.record(loop.time() - started, labels)
        meters.lock_acquisitions.add(1, labels)
        self.lost.clear()
        held.lost = self.lost
        self._held = held
        self._token = held.fencing_token
        if self.auto_renew:
            held.start_renewal()
        self._client.on_close(self)
        return True

    async def renew(self) -> None:
        """Make the lease last ``ttl`` from now (renewal does this by itself unless
        ``auto_renew=False``); never shortens a longer :meth:`extend`.

        Raises :class:`NotHeldError` when not held and :class:`LockLostError` when lost.
        """
        if self._held is None:
            raise NotHeldError(f"{self.name!r} is not held by this instance", name=self.name)
        await self._held.renew()

    async def extend(self, additional: float, *, replace_ttl: bool = False) -> None:
        """Add ``additional`` seconds to what remains of the lease, as redis-py's
        ``Lock.extend``; with ``replace_ttl=True`` the lease lasts ``additional`` seconds from
        now instead (it may shorten it).

        One compare-and-set on the lease's revision: the fencing token stays the same.
        Renewal (``auto_renew``) never shortens an extended lease, and it keeps at least
        ``ttl`` ahead, so shortening with ``replace_ttl`` lasts only with ``auto_renew=False``.
        Raises :class:`ConfigError` before any I/O unless ``additional`` is a finite number of
        seconds > 0 (with ``replace_ttl``: >= 1, the server's minimum) and at most a century;
        :class:`NotHeldError` when this instance does not hold the lease;
        :class:`LockLostError` (and sets :attr:`lost`) when it ran out or was taken over.
        """
        additional = check_additional(additional, replace_ttl)
        if self._held is None:
            raise NotHeldError(f"{self.name!r} is not held by this instance", name=self.name)
        await self._held.extend(additional, replace_ttl=replace_ttl)

    async def release(self) -> None:
        """Stop renewing and delete the lease if it is still ours.

        Raises :class:`NotHeldError` when this instance does not hold it, and
        :class:`LockLostError` when the lease expired or was taken over meanwhile (then
        nothing is deleted: the new holder's lease stays).
        """
        held = self._held
        if held is None:
            raise NotHeldError(f"{self.name!r} is not held by this instance", name=self.name)
        self._held = None
        self._client.off_close(self)
        try:
            await held.release()
        finally:
            self._local.release()

    async def aclose(self) -> None:
        """Release the lease if this instance holds it; a lost lease is only logged.

        The client calls this for every held lease when it closes, so closing a client frees
        its locks, permits and leaderships at once instead of after their ttl.
        """
        if self._held is None:
            return
        try:
            await self.release()
        except JsflowError as exc:
            _log.warning("lease.close_failed", bucket=self.bucket, key=self.name, error=repr(exc))

    async def holders(self) -> list[str]:
        """The owners holding this lease now, as the server sees it (any process; empty when
        free). One read per key, no waiting; a holder that died counts until its ttl ends."""
        store = await self._store()
        entries = await asyncio.gather(*(store.get(key) for key in self._keys()))
        return [entry.value.owner for entry in entries if entry is not None]

    async def __aenter__(self) -> Self:
        if not await self.acquire(timeout=self.blocking_timeout):
            raise LockTimeoutError(
                f"{self.name!r} in bucket {self.bucket!r} was not acquired within "
                f"{self.blocking_timeout}s",
                name=self.name,
            )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.release()
