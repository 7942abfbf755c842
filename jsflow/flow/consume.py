"""The one consume-and-settle mechanism of every JetStream consumer loop in jsflow.

:class:`FlowHandler`, the tasks layer's ``EventRouter`` and the task ``Worker`` all read a
durable pull consumer and settle what they read the same way:

* :func:`fetch_loop` fetches batches through a :class:`jsflow._js.Puller` (or anything with
  its ``fetch(n, timeout)``) until a stop event is set, and ends with
  :class:`ConnectionClosedError` at once when the connection is closed for good.
* :class:`SettlePolicy` decides what happens to a message that failed: nak with backoff,
  dead letter (:class:`jsflow.flow.dead_letter.DeadLetter`) and terminate, or terminate; it
  also acks, and acks with confirmation where a graceful stop must know the ack arrived.
* :meth:`SettlePolicy.ride_out` runs the consumer's own writes (sink publishes, task
  requests, dead letters) through an outage of the backbone: a stream without a leader in a
  failover, a reconnect, a timed-out request. Those writes carry ``Nats-Msg-Id`` and are
  retried in place, the message kept in progress, for up to ``outage_window`` seconds, so a
  node's death never spends a message's deliveries and terminates it.

The task ``Worker`` settles with the same primitives (:meth:`SettlePolicy.ack`, ``nak``,
``term``) but decides from the task's recorded state, not from the delivery count: a task's
retry budget and its dead letter (a ``DEAD`` state with its event) live in the task-state
bucket, because a retry is a nak that must not spend a delivery of the crash allowance.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import inspect
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from jsflow._js import Msg, map_nats_errors
from jsflow._validate import count, number, shorten
from jsflow.backoff import Backoff
from jsflow.errors import (
    CodecError,
    ConfigError,
    ConnectionClosedError,
    ConnectionFailedError,
    ControlLineTooLongError,
    InvalidKeyError,
    InvalidNameError,
    NoStreamError,
    PayloadTooLargeError,
    RequestTimeoutError,
    StageTimeoutError,
)
from jsflow.observability import get_logger

if TYPE_CHECKING:
    from jsflow.client import Client
    from jsflow.flow.dead_letter import DeadLetter

__all__ = [
    "DEAD_LETTER_MARGIN",
    "DETERMINISTIC_ERRORS",
    "FETCH_BACKOFF",
    "OUTAGE_BACKOFF",
    "OUTAGE_WINDOW",
    "UNAVAILABLE_ERRORS",
    "Fetcher",
    "Outcome",
    "SettlePolicy",
    "Settlement",
    "check_backoff",
    "fetch_loop",
    "is_deterministic",
    "is_unavailable",
]

_log = get_logger(__name__)
T = TypeVar("T")

# The pause after the n-th fetch failure in a row.
FETCH_BACKOFF = Backoff(initial=0.1, maximum=5.0, jitter=0.5)

# Failures no retry can fix: the same message fails the same way on every delivery.
DETERMINISTIC_ERRORS: tuple[type[BaseException], ...] = (
    CodecError,
    PayloadTooLargeError,
    ControlLineTooLongError,
    InvalidKeyError,
    InvalidNameError,
)
# The backbone itself is unavailable: a stream without a leader (failover), no JetStream
# answering, a reconnect in progress, a request that timed out. Retrying the same write later
# succeeds; the message is not at fault.
UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    NoStreamError,
    ConnectionFailedError,
    RequestTimeoutError,
)
# How long a consumer's own write is retried through an outage before the failure counts as
# the message's (a JetStream cluster elects a new stream leader within seconds).
OUTAGE_WINDOW = 30.0
OUTAGE_BACKOFF = Backoff(initial=0.1, maximum=2.0, jitter=0.5)
# Deliveries the server allows beyond ``max_deliver``, for dead-letter publishes that failed
# (the message is nak'ed and tried again); past them the server stops redelivering it.
DEAD_LETTER_MARGIN = 10


def is_deterministic(error: BaseException) -> bool:
    """Whether ``error`` would recur on every redelivery (dead-letter it at once)."""
    return isinstance(error, DETERMINISTIC_ERRORS)


def is_unavailable(error: BaseException) -> bool:
    """Whether ``error`` means the backbone is unavailable for now (retry the write later),
    not that the message or its processing is at fault. A closed connection is final."""
    return isinstance(error, UNAVAILABLE_ERRORS) and not isinstance(
        error, ConnectionClosedError | StageTimeoutError
    )


def check_backoff(name: str, value: object) -> list[float]:
    """A list of nak delays (seconds, finite, >= 0); :class:`ConfigError` naming ``name``."""
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        raise ConfigError(f"{name} must be a list of seconds, got {shorten(value)}")
    return [number(f"{name}[{i}]", b, minimum=0.0, maximum=86400.0) for i, b in enumerate(value)]


class Fetcher(Protocol):
    """What :func:`fetch_loop` reads: :class:`jsflow._js.Puller` or a ``StreamSource``."""

    async def fetch(self, n: int, timeout: float) -> list[Msg]:
        """Up to ``n`` messages; :class:`RequestTimeoutError` when none came in ``timeout``."""
        ...


async def _sleep_unless(stop: asyncio.Event, delay: float) -> None:
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(delay):
            await stop.wait()


async def fetch_loop(
    fetcher: Fetcher,
    deliver: Callable[[list[Msg]], Awaitable[object] | None],
    *,
    client: Client,
    stop: asyncio.Event,
    batch: int | None = None,
    reserve: Callable[[], Awaitable[int]] | None = None,
    release: Callable[[int], None] | None = None,
    timeout: float | Callable[[], float] = 1.0,
    name: str = "",
    backoff: Backoff = FETCH_BACKOFF,
) -> None:
    """Fetch and ``deliver`` batches until ``stop`` is set, then return.

    How many messages one fetch asks for: ``batch`` (fixed), or ``reserve()``, an async
    callable that waits for capacity and returns how many messages the caller can take now
    (it must return when ``stop`` is set; 0 means none, the loop checks ``stop`` again).
    Reserved capacity the fetch did not fill is handed back with ``release(unused)``, also
    when the fetch failed or was cancelled. ``deliver(msgs)`` takes ownership of the
    messages (it may be async: then the next fetch waits for it); it is not called with an
    empty list. ``timeout`` (seconds, or a callable read before each fetch) bounds a fetch.

    Guarantees:

    * no messages (:class:`RequestTimeoutError`): fetch again;
    * the connection closed for good (``client.nc.is_closed``, or
      :class:`ConnectionClosedError`): end with :class:`ConnectionClosedError` at once, never
      retry a closed connection;
    * any other error: log it and wait ``backoff.delay(n)`` after the ``n``-th failure in a
      row (:data:`FETCH_BACKOFF`: from 0.1 s, capped at 5 s, never below half; reset by an
      answer of the server; interrupted by ``stop``), so a failing server is never spun on;
    * an error raised by ``deliver`` is the caller's bug: it ends the loop.
    """
    if (batch is None) == (reserve is None):
        raise ConfigError("fetch_loop needs exactly one of batch and reserve")
    if batch is not None:
        batch = count("batch", batch)
    failures = 0
    nc = client.nc
    while not stop.is_set():
        if nc.is_closed:
            raise ConnectionClosedError(f"{name or 'consumer'}: the connection is closed")
        if reserve is not None:
            n = await reserve()
            if n <= 0 or stop.is_set():
                if n > 0 and release is not None:
                    release(n)
                continue
        else:
            assert batch is not None
            n = batch
        got = 0
        try:
            wait = timeout() if callable(timeout) else timeout
            with map_nats_errors():
                msgs = await fetcher.fetch(n, wait)
            got = len(msgs)
        except RequestTimeoutError:
            failures = 0  # the server answered: the connection works
            continue
        except ConnectionClosedError:
            raise
        except Exception as exc:
            if nc.is_closed:
                raise ConnectionClosedError(
                    f"{name or 'consumer'}: the connection is closed"
                ) from exc
            failures += 1
            delay = backoff.delay(failures)
            _log.warning(
                "consume.fetch_failed",
                consumer=name,
                error=repr(exc),
                failures=failures,
                retry_in=round(delay, 3),
            )
            await _sleep_unless(stop, delay)
            continue
        finally:
            if reserve is not None and release is not None and got < n:
                release(n - got)
        failures = 0
        if msgs:
            result = deliver(msgs)
            if inspect.isawaitable(result):
                await result


class Outcome(enum.Enum):
    """How a message was settled."""

    ACKED = "acked"
    NAKED = "naked"  # handed back for redelivery after ``Settlement.delay``
    DEAD_LETTERED = "dead_lettered"  # published to the dead letter, then terminated
    TERMINATED = "terminated"  # no dead letter: logged as an error and terminated


@dataclass(frozen=True, slots=True)
class Settlement:
    """What :class:`SettlePolicy` did with a message (``delay``: the nak delay, seconds)."""

    outcome: Outcome
    delay: float = 0.0

    @property
    def handed_back(self) -> bool:
        """Whether the message was nak'ed (its redelivery comes later)."""
        return self.outcome is Outcome.NAKED


class SettlePolicy:
    """How a consumer settles the messages it read; one policy per consumer.

    Guarantees, for :meth:`fail` (a message whose processing raised ``error`` on delivery
    ``delivery``):

    * a deterministic failure (:data:`DETERMINISTIC_ERRORS`: it would fail the same way on
      every redelivery) goes to the dead letter at once;
    * any other failure is nak'ed with the delay ``backoff[delivery-1]`` (the last value
      repeats; no delay when ``backoff`` is empty) until ``max_deliver`` deliveries, and
      the ``max_deliver``-th is dead-lettered;
    * dead-lettering publishes the message (body and headers, bounded to the server's
      ``max_payload``) to the dead letter and then terminates it; without a dead letter it
      is logged as an error and terminated; when the dead-letter publish fails it is
      nak'ed (``backoff[-1]``), never dropped: the consumer's server-side ``max_deliver``
      (:attr:`server_max_deliver`) bounds those retries.

    :meth:`ride_out` retries a write of the consumer's own (not the user's processing)
    while the backbone is unavailable (:func:`is_unavailable`), for up to ``outage_window``
    seconds (:data:`OUTAGE_WINDOW`), before the failure is settled as above.

    Nak/term/ack are best effort (a lost one is redelivered after ``ack_wait``);
    :meth:`ack_confirmed` waits for the server's confirmation. ``component`` prefixes log
    events (``<component>.nak``, ``<component>.dead_lettered``, ...).
    """

    def __init__(
        self,
        client: Client,
        *,
        max_deliver: int,
        backoff: Sequence[float],
        dead_letter: DeadLetter | None,
        component: str,
        name: str,
        outage_window: float = OUTAGE_WINDOW,
        stop: asyncio.Event | None = None,
    ) -> None:
        self.client = client
        self.stop = stop  # set: the consumer is stopping (ride no outage out then)
        self.outage_window = number("outage_window", outage_window, minimum=0.0, maximum=3600.0)
        self.max_deliver = count("max_deliver", max_deliver, minimum=1, maximum=1_000_000)
        self.backoff = check_backoff("backoff", backoff)
        self.dead_letter = dead_letter
        self.component = component
        self.name = name

    @property
    def server_max_deliver(self) -> int:
        """The consumer's ``max_deliver``: ours plus room for failed dead-letter publishes."""
        return self.max_deliver + DEAD_LETTER_MARGIN

    def delay(self, delivery: int) -> float:
        """The nak delay after failed delivery ``delivery`` (1-based; the last repeats)."""
        backoff = self.backoff
        return backoff[min(max(delivery, 1), len(backoff)) - 1] if backoff else 0.0

    def gives_up(self, error: BaseException, delivery: int) -> bool:
        """Whether a failure on ``delivery`` is final (dead letter rather than nak)."""
        return delivery >= self.max_deliver or is_deterministic(error)

    async def ride_out(
        self,
        write: Callable[[], Awaitable[T]],
        msg: Msg,
        *,
        stop: asyncio.Event | None = None,
        what: str = "write",
        ident: str = "",
    ) -> T:
        """``await write()``, retried with :data:`OUTAGE_BACKOFF` while it fails because
        the backbone is unavailable, for up to ``outage_window`` seconds in all.

        ``write`` must be idempotent (a publish with ``Nats-Msg-Id``). ``msg`` is kept in
        progress meanwhile, so the server does not redeliver it elsewhere. The last error
        is raised when the window is spent, ``stop`` is set, or the error is of another
        kind: the caller settles it as the message's failure. ``stop`` defaults to the
        policy's.
        """
        try:  # the common case: one write, nothing else paid for
            return await write()
        except Exception as exc:
            if not is_unavailable(exc):
                raise
            error = exc
        stop = stop if stop is not None else self.stop
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.outage_window
        attempt = 0
        while True:
            attempt += 1
            delay = OUTAGE_BACKOFF.delay(attempt)
            if (
                not is_unavailable(error)
                or loop.time() + delay > deadline
                or (stop is not None and stop.is_set())
            ):
                raise error
            self._log(
                _log.warning if attempt == 1 else _log.debug,
                "outage_retry",
                msg,
                error,
                ident,
                what=what,
                attempt=attempt,
                retry_in=round(delay, 3),
            )
            with contextlib.suppress(Exception):
                await msg.in_progress()
            if stop is None:
                await asyncio.sleep(delay)
            else:
                await _sleep_unless(stop, delay)
            try:
                return await write()
            except Exception as exc:
                error = exc

    async def fail(
        self,
        msg: Msg,
        error: BaseException,
        delivery: int,
        *,
        stage: str | None = None,
        dedupe_id: str,
        ident: str = "",
    ) -> Settlement:
        """Settle a failed message: nak with backoff, or dead-letter when it gives up."""
        if self.gives_up(error, delivery):
            return await self.dead_letter_msg(
                msg, error, delivery, stage=stage, dedupe_id=dedupe_id, ident=ident
            )
        delay = self.delay(delivery)
        self._log(_log.info, "nak", msg, error, ident, stage=stage, delivery=delivery, delay=delay)
        await self.nak(msg, delay)
        return Settlement(Outcome.NAKED, delay)

    async def dead_letter_msg(
        self,
        msg: Msg,
        error: BaseException,
        delivery: int,
        *,
        stage: str | None = None,
        dedupe_id: str,
        ident: str = "",
    ) -> Settlement:
        """Dead-letter ``msg`` and terminate it (see the class docstring for the guarantees).

        ``dedupe_id`` is the dead letter's ``Nats-Msg-Id`` (so a redelivered failure is
        dead-lettered once).
        """
        dead_letter = self.dead_letter
        if dead_letter is None:
            self._log(
                _log.error,
                "terminated_without_dead_letter",
                msg,
                error,
                ident,
                stage=stage,
                delivery=delivery,
            )
            await self.term(msg)
            return Settlement(Outcome.TERMINATED)
        try:
            await self.ride_out(
                lambda: dead_letter.publish(
                    self.client,
                    msg,
                    error=error,
                    delivery=delivery,
                    dedupe_id=dedupe_id,
                    stage=stage,
                ),
                msg,
                what="dead letter",
                ident=ident,
            )
        except Exception as exc:  # a failing dead letter never drops the message
            delay = self.backoff[-1] if self.backoff else 0.0
            self._log(
                _log.error, "dead_letter_failed", msg, exc, ident, dead_letter=dead_letter.subject
            )
            await self.nak(msg, delay)
            return Settlement(Outcome.NAKED, delay)
        self._log(
            _log.warning,
            "dead_lettered",
            msg,
            error,
            ident,
            dead_letter=dead_letter.subject,
            stage=stage,
            delivery=delivery,
        )
        await self.term(msg)
        return Settlement(Outcome.DEAD_LETTERED)

    def _log(
        self,
        emit: Callable[..., Any],
        event: str,
        msg: Msg,
        error: BaseException,
        ident: str,
        **fields: Any,
    ) -> None:
        """One settlement log line: ``<component>.<event>`` with the message's identity."""
        emit(
            f"{self.component}.{event}",
            name=self.name,
            id=ident[:200],
            subject=msg.subject,
            error=repr(error)[:500],
            **fields,
        )

    @staticmethod
    async def ack(msg: Msg) -> None:
        """Ack without waiting for the server (best effort: a lost ack means a redelivery)."""
        # Not contextlib.suppress: this runs once per message, and a bare try costs nothing.
        try:  # noqa: SIM105
            await msg.ack()
        except Exception:
            pass

    @staticmethod
    async def ack_confirmed(msg: Msg, timeout: float = 2.0) -> bool:
        """Ack and wait until the server confirms it; ``False`` when it did not in time.

        For a graceful stop: once this returned ``True`` the message is no longer pending.
        """
        try:
            with map_nats_errors():
                await msg.ack_sync(timeout=timeout)
        except Exception:
            return False
        return True

    @staticmethod
    async def nak(msg: Msg, delay: float = 0.0) -> None:
        """Hand ``msg`` back for redelivery after ``delay`` seconds (best effort)."""
        with contextlib.suppress(Exception):
            await msg.nak(delay=delay or None)

    @staticmethod
    async def term(msg: Msg) -> None:
        """Tell the server never to redeliver ``msg`` (best effort)."""
        with contextlib.suppress(Exception):
            await msg.term()
