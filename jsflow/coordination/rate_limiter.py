"""RateLimiter: a distributed rate limiter whose state is one protobuf message per key.

Three algorithms share one state message (``jsflow.v1.RateLimitState``):

* ``"gcra"`` (default), the generic cell rate algorithm: one float per key, the theoretical
  arrival time (TAT) of the next unit at the sustained rate.
* ``"sliding_window"``: the admission times of the last ``burst`` units, like the moving
  window of the ``limits`` library; exact, but its state grows with ``burst``.
* ``"fixed_window"``: at most ``burst`` units in each aligned window of ``per`` seconds
  (window ``floor(now / per)``, so every host and key shares the same boundaries), like the
  fixed window of the ``limits`` library; the state is two integers, the window's index and
  its count, and a key's allowance resets at a known time. ``rate`` only sets the default
  ``burst``.

GCRA and the sliding window admit at most ``burst + rate * t / per`` units in any window of
length ``t``; the fixed window admits at most ``burst`` per aligned window, hence up to
``2 * burst`` in a short span around a window boundary (the price of its small state).
Each holds across any number of processes: every decision is a compare-and-set of the key's
state (:meth:`jsflow.ObjectStore.update`), and the decision is computed *inside* the update
function, so concurrent callers in one process are combined into one round trip and a
conflict with another process re-runs the decision on fresh state.

Time: decisions use the deciding host's wall clock (``time.time()``, or ``clock=``), as the
``limits`` library does; hosts are assumed NTP-synced. A host whose clock runs ``d`` seconds
ahead may admit up to ``d * rate / per`` units early; a slow clock only admits less. The
server's clock is not used because JetStream offers no way to read it without a write,
which would double the cost of every decision.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, Literal, Protocol

from opentelemetry import trace

from jsflow._proto.rate_limiter_pb2 import RateLimitState
from jsflow._validate import check_name, count, number, optional_duration
from jsflow.connection import check_replicas
from jsflow.coordination.rates import parse_rate
from jsflow.errors import ConfigError, ConflictError, RateLimitExceeded
from jsflow.keys import validate_key
from jsflow.observability import get_logger, instruments, tracer, tracing_enabled
from jsflow.store import StoreOptions, open_store

if TYPE_CHECKING:
    from jsflow.connection import Connection
    from jsflow.store import ObjectStore

__all__ = ["DEFAULT_BUCKET", "Algorithm", "Decision", "RateLimiter"]

Algorithm = Literal["gcra", "sliding_window", "fixed_window"]

DEFAULT_BUCKET = "jsflow_rate_limits"
_ALGORITHMS = ("gcra", "sliding_window", "fixed_window")
# Slack for float rounding when comparing times (seconds): far below any useful rate.
_EPS = 1e-9
# Extra lifetime of a key's state beyond the moment it stops mattering, for clock skew.
_TTL_MARGIN = 2.0
_MAX_WINDOW_BURST = 50_000
# The fixed window's state is a sint64 window index and a uint64 count: windows of at least
# a millisecond keep the index of any Unix time in range.
_MIN_FIXED_PER = 0.001
_MAX_FIXED_BURST = 2**63
# How far ahead acquire() reserves at most: a longer (or no) timeout sleeps and decides again.
# It bounds the TTL of a key's state (span + this + margin), which must be finite: a write
# without a TTL would keep the key forever.
_MAX_RESERVE = 3600.0
_KNOWN_KEYS = 1024
_log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of one rate-limit check.

    ``allowed``: whether the units were admitted. ``remaining``: how many more units the key
    would admit right now. ``retry_after``: seconds until ``cost`` units could be admitted
    (``0.0`` when allowed).
    """

    allowed: bool
    remaining: int
    retry_after: float


@dataclass(frozen=True, slots=True)
class _Plan:
    """What a step decided: admit after ``wait`` seconds (0: now), or not at all."""

    committed: bool
    wait: float
    remaining: int


def _gcra_step(
    state: Any, now: float, *, cost: int, interval: float, burst: int, horizon: float
) -> _Plan:
    """One GCRA decision on ``state`` (a ``RateLimitState``), mutating it when admitted.

    ``interval`` is seconds per unit (``per / rate``). Units are admitted at the earliest
    time ``at >= now`` with ``max(tat, now) + cost * interval <= at + burst * interval``; when
    ``at - now <= horizon`` the units are reserved for ``at`` (``horizon=0``: only now).
    The arrival time is kept in integer nanoseconds and each step rounded up: rounding can
    only admit less, never more (a float of Unix seconds would round every step to ~0.24 us
    and, at a million units a second, admit more than the burst).
    """
    unit = math.ceil(interval * 1e9)  # one unit's spacing, rounded up: never faster
    step = cost * unit
    allowance = burst * unit
    now_ns = math.floor(now * 1e9)
    tat = state.tat_ns or math.ceil(state.tat * 1e9)
    base = max(tat, now_ns)
    new_tat = base + step
    at = max(now_ns, new_tat - allowance)
    wait = (at - now_ns) / 1e9
    if at <= now_ns:  # exact integers: no tolerance that could admit one unit too many
        state.tat_ns = new_tat
        state.tat = 0.0
        return _Plan(True, 0.0, max(0, (now_ns + allowance - new_tat) // unit))
    if wait <= horizon:
        state.tat_ns = new_tat
        state.tat = 0.0
        return _Plan(True, wait, 0)
    return _Plan(False, wait, max(0, (now_ns + allowance - base) // unit))


def _window_step(
    state: Any, now: float, *, cost: int, interval: float, burst: int, horizon: float
) -> _Plan:
    """One sliding-window decision: at most ``burst`` units in any ``burst * interval`` seconds.

    ``state.window`` holds ascending admission times, one per unit, at most ``burst`` of them.
    Admissions are first come, first served: a unit is never admitted before one reserved
    earlier. Mutates ``state`` when admitted (now, or reserved within ``horizon``).
    """
    period = burst * interval
    entries = [t for t in state.window if t > now - period]
    room = burst - cost
    at = now
    if entries:
        at = max(at, entries[-1])
    if len(entries) > room:
        at = max(at, entries[len(entries) - room - 1] + period)
    wait = at - now
    if wait <= _EPS or wait <= horizon:
        entries.extend([at] * cost)
        del state.window[:]
        state.window.extend(entries[-burst:])
        if wait <= _EPS:
            return _Plan(True, 0.0, max(0, burst - len(entries)))
        return _Plan(True, wait, 0)
    pending = entries and entries[-1] > now + _EPS
    return _Plan(False, wait, 0 if pending else max(0, burst - len(entries)))


def _fixed_window_step(
    state: Any,
    now: float,
    *,
    cost: int,
    interval: float,
    burst: int,
    horizon: float,
    per: float,
) -> _Plan:
    """One fixed-window decision: at most ``burst`` units in each window of ``per`` seconds.

    Window ``i`` is ``[i * per, (i + 1) * per)`` in Unix seconds; ``state`` holds the index
    of the window it counts (``fixed_window``) and the units in it (``fixed_count``). The
    state only moves forward: a later window than now's (reserved by ``acquire``, or written
    by a host whose clock runs ahead) is counted in, so a slow clock admits less, never more,
    and admissions are first come, first served. Units that do not fit go to the next
    window, reserved when it starts within ``horizon``. ``interval`` is unused (the
    signature is the other steps'). Mutates ``state`` when admitted.
    """
    current = math.floor((now + _EPS) / per)
    index = max(current, state.fixed_window)
    used = state.fixed_count if state.fixed_window == index else 0
    if used + cost > burst:
        index, used = index + 1, 0
    if index == current:
        state.fixed_window = index
        state.fixed_count = used + cost
        return _Plan(True, 0.0, burst - used - cost)
    wait = max(0.0, index * per - now)
    if wait <= horizon:
        state.fixed_window = index
        state.fixed_count = used + cost
        return _Plan(True, wait, 0)
    # Denied: what is left now is the current window's room (none behind a reservation).
    room = burst - state.fixed_count if state.fixed_window == current else 0
    return _Plan(False, wait, room)


class _Step(Protocol):
    """The shape of one algorithm's decision (``_gcra_step`` and the others)."""

    def __call__(
        self, state: Any, now: float, *, cost: int, interval: float, burst: int, horizon: float
    ) -> _Plan: ...


def _decision(plan: _Plan) -> Decision:
    """What a caller is told of ``plan``: admitted now, or denied with when to retry."""
    if plan.committed:
        return Decision(True, plan.remaining, 0.0)
    return Decision(False, plan.remaining, plan.wait)


def _no_horizon() -> float:
    """The horizon of :meth:`RateLimiter.try_acquire`: admit now or not at all."""
    return 0.0


class _Denied(Exception):
    """Internal signal, not an error: raised inside the update function so that a denial
    writes nothing."""

    def __init__(self, plan: _Plan) -> None:
        super().__init__("denied")
        self.plan = plan


def _positive(name: str, value: object) -> float:
    return number(name, value, minimum=0.0, exclusive_minimum=True)


def _token(name: str) -> str:
    """``name`` as one key token: a dotted name (``api.partner``) may not run into the keys
    of another limiter (``api`` limiting ``partner.x``), so ``=`` and ``.`` are escaped as
    :func:`jsflow.key` does; names without them are used as they are."""
    validate_key(name)
    return name.replace("=", "=3D").replace(".", "=2E")


class RateLimiter:
    """``rate`` units per ``per`` seconds, in bursts of up to ``burst``, per key.

    Create with :meth:`jsflow.Client.rate_limiter`. The constructor does no I/O and validates
    its arguments (:class:`jsflow.ConfigError`, :class:`jsflow.InvalidKeyError`). State lives
    in the KV bucket ``bucket`` (shared by all limiters, keys ``<name>.<key>``) and expires on
    its own once a key has been idle long enough to be back at full burst.

    ``burst`` defaults to ``max(1, floor(rate))``: a full period's allowance at once.
    ``algorithm`` is ``"gcra"``, ``"sliding_window"`` or ``"fixed_window"`` (``burst`` units
    per aligned window of ``per`` seconds, ``per`` at least a millisecond; see the module
    docstring).
    ``clock`` returns Unix time in seconds (default ``time.time``).
    """

    def __init__(
        self,
        client: Connection,
        name: str,
        rate: float | str | tuple[float, float],
        *,
        per: float = 1.0,
        burst: int | None = None,
        algorithm: Algorithm = "gcra",
        bucket: str = DEFAULT_BUCKET,
        clock: Callable[[], float] = time.time,
        replicas: int | None = None,
    ) -> None:
        validate_key(name)
        self.name = name
        # Of the bucket when created (default: the client's); an existing one keeps its own.
        self.replicas = None if replicas is None else check_replicas(replicas)
        self._allowed_labels = {"limiter": name, "allowed": "true"}
        self._denied_labels = {"limiter": name, "allowed": "false"}
        self.rate, self.per = parse_rate(rate, per)
        if burst is None:
            burst = max(1, math.floor(min(self.rate, 2.0**62)))
        count("burst", burst, minimum=1)
        if not self.per / self.rate > 0:
            raise ConfigError(f"rate {rate} per {per}s is out of range (interval underflows)")
        if algorithm not in _ALGORITHMS:
            raise ConfigError(f"algorithm must be one of {_ALGORITHMS}, got {algorithm!r}")
        if algorithm == "sliding_window" and burst > _MAX_WINDOW_BURST:
            raise ConfigError(
                f"sliding_window keeps one timestamp per unit; burst {burst} exceeds "
                f"{_MAX_WINDOW_BURST} (use algorithm='gcra')"
            )
        if algorithm == "fixed_window":
            if self.per < _MIN_FIXED_PER:
                raise ConfigError(
                    f"fixed_window needs windows of at least {_MIN_FIXED_PER}s, got {self.per:g}s"
                )
            if burst > _MAX_FIXED_BURST:
                raise ConfigError(f"fixed_window burst must be <= 2**63, got {burst}")
        if not callable(clock):
            raise ConfigError("clock must be a callable returning Unix seconds")
        self.burst = burst
        self.algorithm: Algorithm = algorithm
        self.bucket = check_name("bucket", bucket)
        self.interval = self.per / self.rate
        # How long a key's state limits anything after a decision: GCRA's delay tolerance
        # and the sliding window's period are the same span, burst intervals; a fixed
        # window's state limits until its window ends, at most ``per`` after now.
        self.span = self.per if algorithm == "fixed_window" else self.burst * self.interval
        self._client = client
        self._clock = clock
        self._step: _Step
        if algorithm == "gcra":
            self._step = _gcra_step
        elif algorithm == "sliding_window":
            self._step = _window_step
        else:
            self._step = partial(_fixed_window_step, per=self.per)
        self._store: ObjectStore[Any] | None = None
        self._store_lock = asyncio.Lock()
        # Last state this limiter wrote or read per key, with its revision (bounded LRU).
        self._known: OrderedDict[str, tuple[int, Any]] = OrderedDict()
        self._busy: dict[str, int] = {}
        self._valid: dict[str, None] = {}  # full keys already validated (bounded, oldest out)
        self._prefix = f"{_token(name)}."
        # try_acquire's TTL never changes (no horizon): compute it once.
        self._instant_ttl = self._ttl(0.0)

    def __repr__(self) -> str:
        return (
            f"RateLimiter({self.name!r}, rate={self.rate}, per={self.per}, "
            f"burst={self.burst}, algorithm={self.algorithm!r})"
        )

    def _key(self, key: str, cost: int) -> str:
        if type(cost) is not int or not 1 <= cost <= self.burst:
            count("cost", cost, minimum=1)
            if cost > self.burst:
                raise ConfigError(
                    f"cost {cost} exceeds burst {self.burst}: it could never be admitted"
                )
        if type(key) is str:
            full = self._prefix + key
            if full in self._valid:  # validated when it was first seen
                return full
        if not isinstance(key, str):
            validate_key(key)  # InvalidKeyError naming the type
        # The stored key is "<name>.<key>": that whole key must be legal (and bounded).
        full = validate_key(self._prefix + key)
        self._valid[full] = None
        while len(self._valid) > _KNOWN_KEYS:
            del self._valid[next(iter(self._valid))]
        return full

    async def _get_store(self) -> ObjectStore[Any]:
        if self._store is None:
            async with self._store_lock:
                if self._store is None:
                    self._store = await open_store(
                        self._client,
                        self.bucket,
                        RateLimitState,
                        StoreOptions(replicas=self.replicas),
                    )
        return self._store

    def _ttl(self, horizon: float) -> float:
        """A key's lifetime: long enough to outlive every admission its state still limits."""
        # Whole seconds so that calls with similar timeouts are combined into one write.
        return float(math.ceil(self.span + horizon + _TTL_MARGIN))

    def _plan(self, state: Any, cost: int, horizon: Callable[[], float]) -> _Plan:
        return self._step(
            state,
            self._clock(),
            cost=cost,
            interval=self.interval,
            burst=self.burst,
            horizon=horizon(),
        )

    async def _decide(
        self, key: str, cost: int, horizon: Callable[[], float], span: trace.Span | None
    ) -> _Plan:
        """Decide for ``key``: alone, by one compare-and-set; else combined with the others.

        A caller alone on a key in this limiter steps a copy of the state this limiter last
        wrote (read once if unknown) and compare-and-sets it: one round trip, no task. While
        other decisions on the key are in flight here, it joins :meth:`ObjectStore.update`,
        which combines them all into one compare-and-set. A lost compare-and-set falls back
        to that path too, which re-reads and retries within the store's retry budget.
        """
        store = self._store if self._store is not None else await self._get_store()
        ttl = self._instant_ttl if horizon is _no_horizon else self._ttl(horizon())
        busy = self._busy
        waiting = busy.get(key, 0)
        busy[key] = waiting + 1
        try:
            if not waiting:
                plan = await self._decide_alone(store, key, cost, horizon, ttl)
                if plan is not None:
                    return plan
            if span is None:
                return await self._decide_combined(store, key, cost, horizon, ttl)
            with trace.use_span(span, end_on_exit=False):  # store spans nest under ours
                return await self._decide_combined(store, key, cost, horizon, ttl)
        finally:
            left = busy[key] - 1
            if left:
                busy[key] = left
            else:
                del busy[key]

    async def _decide_alone(
        self,
        store: ObjectStore[Any],
        key: str,
        cost: int,
        horizon: Callable[[], float],
        ttl: float,
    ) -> _Plan | None:
        known = self._known.get(key)
        if known is None:
            entry = await store.get(key)
            if entry is None:  # absent, deleted or expired: the revision to expect is unknown
                return None
            known = (entry.revision, entry.value)
        revision, value = known
        state = RateLimitState()
        state.CopyFrom(value)
        plan = self._plan(state, cost, horizon)
        if not plan.committed:
            # The state known here is the latest or older; older never denies more than the
            # truth (admissions only push it forward), so this denial needs no write.
            self._remember(key, revision, value)
            return plan
        try:
            written = await store.compare_and_set(key, state, revision, ttl=ttl)
        except ConflictError:
            self._known.pop(key, None)
            return None
        self._remember(key, written.revision, state)
        return plan

    async def _decide_combined(
        self,
        store: ObjectStore[Any],
        key: str,
        cost: int,
        horizon: Callable[[], float],
        ttl: float,
    ) -> _Plan:
        outcome: list[_Plan] = []

        def step(state: Any) -> None:
            plan = self._plan(state, cost, horizon)
            if not plan.committed:
                raise _Denied(plan)
            outcome.append(plan)

        # A combined write's entry may hold another caller's intermediate state: forget it.
        self._known.pop(key, None)
        try:
            await store.update(key, step, ttl=ttl)
        except _Denied as denied:
            return denied.plan
        finally:
            self._known.pop(key, None)
        return outcome[-1]

    def _remember(self, key: str, revision: int, state: Any) -> None:
        self._known[key] = (revision, state)
        self._known.move_to_end(key)
        while len(self._known) > _KNOWN_KEYS:
            self._known.popitem(last=False)

    async def peek(self, key: str, cost: int = 1) -> Decision:
        """Whether ``cost`` units for ``key`` would be admitted now, without taking them
        (the ``limits`` library's ``test()``): one read of the key's state, no write.
        ``remaining`` is how many units the key could take now; ``retry_after`` when a denied
        request would be admitted. Another caller may take the units meanwhile."""
        full_key = self._key(key, cost)
        store = self._store if self._store is not None else await self._get_store()
        entry = await store.get(full_key)
        state = RateLimitState()
        if entry is not None:
            state.CopyFrom(entry.value)
        return _decision(self._plan(state, cost, _no_horizon))

    async def try_acquire(self, key: str, cost: int = 1) -> Decision:
        """Admit ``cost`` units for ``key`` now if the limit allows; never waits.

        One compare-and-set when admitted; a denial writes nothing. Raises
        :class:`jsflow.ConflictError` only if the store's retry budget runs out under extreme
        contention.
        """
        full_key = self._key(key, cost)
        if not tracing_enabled():  # nothing would record it: no span on the hot path
            plan = await self._decide(full_key, cost, _no_horizon, None)
        else:
            # A plain span, made current only around the combined path's store update:
            # starting a current span costs more than the rest of this method's Python work.
            span = tracer().start_span(
                "jsflow.rate_limiter.try_acquire",
                attributes={"jsflow.rate_limiter": self.name, "jsflow.key": key},
            )
            try:
                plan = await self._decide(full_key, cost, _no_horizon, span)
                span.set_attribute("jsflow.allowed", plan.committed)
            except BaseException as exc:
                span.record_exception(exc)
                raise
            finally:
                span.end()
        self._count(plan.committed)
        return _decision(plan)

    async def acquire(self, key: str, cost: int = 1, timeout: float | None = None) -> Decision:
        """Wait until ``cost`` units for ``key`` are admitted, at most ``timeout`` seconds.

        The units are reserved in one compare-and-set at the earliest time the limit allows
        (first come, first served), then this sleeps until that time: no polling. When that
        time is further away than ``timeout`` it raises :class:`jsflow.RateLimitExceeded` at
        once, reserving nothing. Cancelling the sleep forfeits the reservation (the limiter
        then admits less, never more).
        """
        full_key = self._key(key, cost)
        timeout = optional_duration("timeout", timeout, positive=False)
        loop = asyncio.get_running_loop()
        deadline = math.inf if timeout is None else loop.time() + timeout

        def horizon() -> float:
            # Reserve at most _MAX_RESERVE ahead, so that the key's TTL stays finite.
            return min(_MAX_RESERVE, max(0.0, deadline - loop.time()))

        with tracer().start_as_current_span("jsflow.rate_limiter.acquire") as span:
            span.set_attribute("jsflow.rate_limiter", self.name)
            span.set_attribute("jsflow.key", key)
            while True:
                plan = await self._decide(full_key, cost, horizon, span)
                if plan.committed or plan.wait > deadline - loop.time():
                    break
                # Admissible within the timeout but beyond the reservation horizon (only
                # with timeouts over _MAX_RESERVE): sleep until it is within it, decide again.
                await asyncio.sleep(plan.wait - _MAX_RESERVE)
            span.set_attribute("jsflow.allowed", plan.committed)
            span.set_attribute("jsflow.wait", plan.wait)
        self._count(plan.committed)
        if not plan.committed:
            raise RateLimitExceeded(self.name, key, plan.wait)
        if plan.wait > 0:
            await asyncio.sleep(plan.wait)
        return Decision(True, plan.remaining, 0.0)

    def _count(self, allowed: bool) -> None:
        labels = self._allowed_labels if allowed else self._denied_labels
        instruments().limiter_decisions.add(1, labels)

    async def reset(self, key: str) -> None:
        """Forget ``key``'s history: it admits a full burst again.

        Limiters in other processes that last saw the key at its limit may go on denying it
        until that state would have allowed them (at most ``burst`` intervals; a fixed
        window: until its window ends); never more.
        """
        full_key = self._key(key, 1)
        store = await self._get_store()
        self._known.pop(full_key, None)
        await store.delete(full_key)
