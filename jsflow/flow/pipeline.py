"""``FlowHandler``: stages over stream sources, acked only after every output is published."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections import deque
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

from opentelemetry import trace

from jsflow._js import Msg
from jsflow._validate import count
from jsflow.errors import ConfigError, JsflowError, RequestTimeoutError
from jsflow.flow._stages import Run, StageFailure, compile_stages, run_stages
from jsflow.flow.consume import OUTAGE_WINDOW, Settlement, SettlePolicy, fetch_loop
from jsflow.flow.dead_letter import DeadLetter
from jsflow.flow.errors import FlowError
from jsflow.flow.handler import Middleware, Stage, StageFn, as_stage_fn
from jsflow.flow.message import Message
from jsflow.flow.metrics import FlowMetrics
from jsflow.flow.operators import Batch
from jsflow.flow.sink import Sink
from jsflow.flow.source import StreamSource
from jsflow.flow.state import MessageState, MessageStatus, StateRecorder
from jsflow.flow.streams import ensure_stream
from jsflow.observability import (
    get_logger,
    inject_context,
    instruments,
    optional_span,
)

if TYPE_CHECKING:
    from jsflow.client import Client
    from jsflow.store import ObjectStore

__all__ = ["FlowHandler"]

_log = get_logger(__name__)
_TRACEPARENT = "traceparent"
_FLUSH_TIMEOUT = 2  # seconds a graceful stop waits for the acks it sent to reach the server


def _output_id_prefix(stream: str, sequence: int, durable: str) -> str:
    """The ``Nats-Msg-Id`` prefix of what one source message causes (``:<index>`` follows).

    Stream and sequence name the source message; the durable consumer tells apart the
    outputs of two flows that read the same stream into the same sink stream (replicas of
    one flow share the durable, so their outputs dedupe as they should).
    """
    return f"{stream}:{sequence}:{durable}"


class FlowHandler:
    """Runs ``stages`` over the messages of ``source`` (one or a list: merged) into ``sink``.

    At least once, end to end: a source message is acked only after every stage and every
    sink publish it caused succeeded. A failure naks it with the delay ``backoff[attempt-1]``
    (the last value repeats); the ``max_deliver``-th failure publishes it to ``dead_letter``
    (original body and headers plus ``Jsflow-Error-*`` headers) and terminates it, and a
    message that does not decode goes there at once, as does a failure no retry can fix
    (an output over the server's ``max_payload``, an invalid key: see
    :mod:`jsflow.flow.consume`). When that publish fails the message is nak'ed instead,
    never dropped. A sink publish (or dead letter) that fails because the backbone is
    unavailable (the sink stream's leader lost in a failover, a reconnect, a timeout) is
    retried in place first, for up to ``outage_window`` seconds with the message kept in
    progress, so a node's death spends none of its deliveries. Outputs carry ``Nats-Msg-Id``
    ``<stream>:<sequence>:<durable>:<index>`` (dead letters ``...:dead``). ``dead_letter``
    must be a literal subject that no source reads and that a stream captures (checked when
    the flow starts), or ``dead_letter_stream`` names the stream to create for it.

    ``concurrency`` (default 100) bounds the messages processed at once. Without ``key`` a fixed
    pool of that many workers runs them, and up to as many more (at most one source batch) are
    fetched ahead, so the next batch is on its way while this one runs (messages waiting their
    turn are kept in progress like the rest); a fetch is sent once half a batch of room is free.
    With ``key``, messages with equal keys are processed one at a time in stream order, across
    failures too: a failing message is retried in place (after its backoff delay,
    ``Message.delivery`` counting the attempts) while later messages of its key wait, and only
    after ``max_deliver`` attempts is it dead-lettered and the key moves on. If it is handed
    back instead (:meth:`stop` during its backoff, a failed dead-letter publish), the messages
    of its key already fetched are nak'ed after it with the same delay, unprocessed; their
    redelivery order is then the server's. A message whose ``key()`` raises fails (stage
    ``"key"``) rather than run unordered. Without ``key``, a failing message is nak'ed and later
    ones go on. ``middleware`` is applied to every stage (the first one outermost).
    ``state_store`` records each message's :class:`MessageState`. ``metrics`` (a fresh
    :class:`FlowMetrics` by default) is :attr:`metrics`; pass one to share it with the metrics
    middleware.

    ``await flow.run()`` runs until cancelled or :meth:`stop`; ``async with flow:`` runs it
    in a task the flow owns and drains it on exit. When the connection closes for good,
    :meth:`run` ends with :class:`jsflow.ConnectionClosedError` within a fetch timeout.
    """

    def __init__(
        self,
        client: Client,
        *,
        source: StreamSource[Any] | Sequence[StreamSource[Any]],
        stages: Sequence[Stage | Batch] = (),
        sink: Sink | None = None,
        concurrency: int = 100,
        max_deliver: int = 5,
        backoff: Sequence[float] = (1.0, 5.0, 30.0),
        dead_letter: str | None = None,
        dead_letter_stream: str | None = None,
        key: Callable[[Message[Any]], str] | None = None,
        middleware: Sequence[Middleware] = (),
        state_store: ObjectStore[MessageState] | None = None,
        metrics: FlowMetrics | None = None,
        name: str | None = None,
        outage_window: float = OUTAGE_WINDOW,
    ) -> None:
        sources = [source] if isinstance(source, StreamSource) else list(source)
        if not sources or not all(isinstance(s, StreamSource) for s in sources):
            raise ConfigError(f"source must be a StreamSource or a list of them, got {source!r}")
        if len({(s.stream, s.durable) for s in sources}) != len(sources):
            raise ConfigError("two sources share a stream and durable consumer")
        concurrency = count("concurrency", concurrency, maximum=100_000)
        if sink is not None and not isinstance(sink, Sink):
            raise ConfigError(f"sink must have open() and publish(), got {sink!r}")
        if dead_letter_stream is not None and dead_letter is None:
            raise ConfigError("dead_letter_stream needs a dead_letter subject")
        if key is not None and not callable(key):
            raise ConfigError(f"key must be a callable, got {key!r}")
        if name is not None and not isinstance(name, str):
            raise ConfigError(f"name must be a str, got {name!r}")
        dead = DeadLetter(dead_letter, dead_letter_stream) if dead_letter is not None else None
        if dead is not None:
            for s in sources:
                dead.check_not_consumed(s.subjects, f"source {s!r}")
        self.client = client
        self.sources = sources
        self.sink = sink
        self.concurrency = concurrency
        self.name = name or sources[0].durable
        self._stopping = asyncio.Event()
        self._policy = SettlePolicy(
            client,
            max_deliver=max_deliver,
            backoff=backoff,
            dead_letter=dead,
            component="flow",
            name=self.name,
            outage_window=outage_window,
            stop=self._stopping,
        )
        self.max_deliver = self._policy.max_deliver
        self.backoff = self._policy.backoff
        self.dead_letter = dead_letter
        self.dead_letter_stream = dead_letter_stream
        self.key = key
        self.metrics = metrics if metrics is not None else FlowMetrics()
        self._labels = {"flow": self.name}  # of this flow's OpenTelemetry instruments
        self._stages: list[StageFn | Batch] = []
        for stage in stages:
            if isinstance(stage, Batch):
                self._stages.append(stage)
                continue
            fn = as_stage_fn(stage)
            for mw in reversed(middleware):
                fn = mw(fn)
            self._stages.append(fn)
        self._compiled = compile_stages(self._stages, self.name)
        self._has_batches = any(c.batch is not None for c in self._compiled)
        self._state = StateRecorder(state_store) if state_store is not None else None
        self._inflight: dict[int, Msg] = {}
        self._tasks: set[asyncio.Task[float | None]] = set()
        self._key_tails: dict[str, asyncio.Task[float | None]] = {}
        # Unkeyed messages go to a fixed pool of ``concurrency`` workers (no task per message).
        self._queue: deque[tuple[StreamSource[Any], Msg]] = deque()
        self._parked: deque[asyncio.Future[None]] = deque()
        self._waking = 0  # parked workers woken that have not resumed yet
        self._workers: list[asyncio.Task[None]] = []
        self._busy = 0  # unkeyed messages queued or being handled
        self._idle = asyncio.Event()
        self._capacity = asyncio.Event()
        self._stopped = asyncio.Event()
        self._ready = asyncio.Event()
        self._running = False
        self._runner: asyncio.Task[None] | None = None

    # -- lifecycle -------------------------------------------------------------------------

    async def declare(self) -> None:
        """Create (or bind) every stream this flow reads and writes (its sources', its
        sink's and its dead letter's) without starting it or creating its consumers, so
        producers can publish before the flow first runs. Idempotent."""
        for source in self.sources:
            await ensure_stream(
                self.client, source.stream, source.subjects, replicas=source.replicas
            )
        if self.sink is not None:
            await self.sink.open(self.client)
        if self._policy.dead_letter is not None:
            await self._policy.dead_letter.open(self.client)

    async def _open(self) -> None:
        dead = self._policy.dead_letter
        # Without a dead letter every failure ends in a term; keyed hand-backs (nak'ed
        # unprocessed) must not count against a server-side bound then.
        server_max = self._policy.server_max_deliver if dead is not None else -1
        for source in self.sources:
            await source.open(self.client, max_deliver=server_max)
        if self.sink is not None:
            await self.sink.open(self.client)
        if dead is not None:
            await dead.open(self.client)

    async def run(self) -> None:
        """Consume until cancelled or :meth:`stop`; if cancelled, unsettled messages are nak'ed."""
        if self._running:
            raise FlowError(f"flow {self.name!r} is already running")
        self._running = True
        self._stopped.clear()
        loops: list[asyncio.Task[None]] = []
        ticker: asyncio.Task[None] | None = None
        try:
            await self._open()
            loop = asyncio.get_running_loop()
            self._idle.set()
            if self.key is None:
                self._workers = [loop.create_task(self._worker()) for _ in range(self.concurrency)]
            loops = [loop.create_task(self._fetch_loop(s)) for s in self.sources]
            ticker = loop.create_task(self._ticker())
            self._ready.set()
            stop_waiter = loop.create_task(self._stopping.wait())
            try:
                await asyncio.wait([stop_waiter, *loops], return_when=asyncio.FIRST_COMPLETED)
            finally:
                stop_waiter.cancel()
            for task in loops:  # a loop that ended on its own failed: re-raise its error
                if task.done() and not task.cancelled() and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
            await asyncio.gather(*loops)  # draining: fetch loops see the stop and return
            while self._tasks or self._busy:
                if self._tasks:
                    await asyncio.wait(set(self._tasks))
                else:
                    await self._idle.wait()
            # Acks sent before the stop went out unconfirmed: a PING round trip makes sure the
            # server has read them (those settled while draining were confirmed one by one).
            with contextlib.suppress(Exception):
                await self.client.nc.flush(timeout=_FLUSH_TIMEOUT)
        finally:
            await self._shutdown([*loops, ticker] if ticker is not None else loops)

    async def _shutdown(self, loops: list[asyncio.Task[None]]) -> None:
        pending: list[asyncio.Task[Any]] = [*loops, *self._tasks, *self._workers]
        self._workers = []
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for source in self.sources:  # first, so a nak below is not redelivered to us at once
            with contextlib.suppress(Exception):
                await source.stop_fetching()
        for raw in list(self._inflight.values()):  # cancelled mid-stage: hand back at once
            with contextlib.suppress(Exception):
                await raw.nak()
        self._inflight.clear()
        self._queue.clear()
        self._parked.clear()
        self._waking = 0
        self._busy = 0
        self.metrics.in_flight = 0
        for source in self.sources:
            await source.close()
        self._running = False
        self._stopping.clear()
        self._ready.clear()
        self._stopped.set()

    async def ready(self, timeout: float | None = None) -> None:
        """Wait until :meth:`run` has bound its streams and consumers and is fetching."""
        try:
            async with asyncio.timeout(timeout):
                await self._ready.wait()
        except TimeoutError as exc:
            raise RequestTimeoutError(f"flow {self.name!r} did not start in {timeout}s") from exc

    async def stop(self) -> None:
        """Stop fetching, let in-flight messages finish (and be acked), then return."""
        if not self._running:
            return
        self._stopping.set()
        self._capacity.set()
        await self._stopped.wait()

    async def __aenter__(self) -> FlowHandler:
        self._runner = asyncio.get_running_loop().create_task(self.run())
        ready = asyncio.get_running_loop().create_task(self._ready.wait())
        await asyncio.wait([ready, self._runner], return_when=asyncio.FIRST_COMPLETED)
        ready.cancel()
        if self._runner.done():
            await self._runner  # raises why it could not start
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        runner, self._runner = self._runner, None
        if runner is None:
            return
        if not runner.done():
            await self.stop()
        await runner

    # -- fetching and dispatch -------------------------------------------------------------

    async def _fetch_loop(self, source: StreamSource[Any]) -> None:
        """The shared fetch loop (:func:`fetch_loop`), asking for what capacity allows."""

        # Unkeyed, the pool of ``concurrency`` workers bounds processing, so up to one
        # pool's worth more (at most a batch) is fetched ahead: the next batch is on its way
        # while this one runs, instead of every pull round trip leaving the workers idle.
        # Keyed, each message is a task of its own: in flight is what runs.
        limit = self.concurrency
        if self.key is None:
            limit += min(source.batch, self.concurrency)
        # Refill once half a batch of room is free (nats.go's pull threshold), not at each
        # freed slot: a busy flow would otherwise fetch a message or two per round trip.
        refill_at = max(1, min(source.batch, limit) // 2)

        async def reserve() -> int:
            while limit - len(self._inflight) < refill_at and not self._stopping.is_set():
                self._capacity.clear()
                await self._capacity.wait()
            if self._stopping.is_set():
                return 0
            return min(source.batch, limit - len(self._inflight))

        def deliver(msgs: list[Msg]) -> None:
            for raw in msgs:
                self._dispatch(source, raw)

        await fetch_loop(
            source,
            deliver,
            client=self.client,
            stop=self._stopping,
            reserve=reserve,
            timeout=source.fetch_timeout,
            name=f"flow {self.name!r} {source!r}",
        )

    def _dispatch(self, source: StreamSource[Any], raw: Msg) -> None:
        self._inflight[id(raw)] = raw
        self.metrics.in_flight = len(self._inflight)
        if self.key is None:
            self._busy += 1
            self._idle.clear()
            queue = self._queue
            queue.append((source, raw))
            if len(queue) == 1:  # else a worker is already on its way to it (see _worker)
                self._wake_one()
            return
        loop = asyncio.get_running_loop()
        task: asyncio.Task[float | None]
        try:
            msg = source.decode(raw)
        except JsflowError:  # undecodable: the handler dead-letters it, no key needed
            task = loop.create_task(self._handle_safely(source, raw))
        else:
            try:
                key = str(self.key(msg))
            except Exception as exc:  # never process it out of order: fail it instead
                task = loop.create_task(self._handle_safely(source, raw, key_error=exc))
            else:
                prev = self._key_tails.get(key)
                task = loop.create_task(self._after(prev, source, raw))
                self._key_tails[key] = task
                task.add_done_callback(lambda t, k=key: self._forget_key(k, t))  # type: ignore[misc]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _wake_one(self) -> None:
        parked = self._parked
        while parked:
            waiter = parked.popleft()
            if not waiter.done():
                waiter.set_result(None)
                self._waking += 1
                return

    async def _worker(self) -> None:
        """Handle queued messages one at a time; ``concurrency`` of these bound the flow.

        A worker that takes a message while more are queued wakes up to two more first, so
        work spreads only as far as stages actually suspend (a stage that never does keeps
        the batch on one worker, with no task switch per message): a worker just woken
        wakes two (busy workers ramp up in log2(batch) loop turns); one that goes on
        taking without having suspended wakes helpers only when none is on its way already
        (else it woke one per message, every parked worker once per batch, for nothing).
        """
        loop = asyncio.get_running_loop()
        queue = self._queue
        resumed = True
        while True:
            if not queue:
                while not queue:
                    waiter = loop.create_future()
                    self._parked.append(waiter)
                    try:
                        await waiter
                    finally:
                        if waiter.done() and not waiter.cancelled():
                            self._waking -= 1
                resumed = True
            source, raw = queue.popleft()
            if queue and (resumed or not self._waking):
                self._wake_one()
                if len(queue) > 1:
                    self._wake_one()
            resumed = False
            try:
                await self._handle_safely(source, raw)
            finally:
                self._busy -= 1
                if not self._busy:
                    self._idle.set()

    def _forget_key(self, key: str, task: asyncio.Task[float | None]) -> None:
        if self._key_tails.get(key) is task:
            del self._key_tails[key]

    async def _after(
        self, prev: asyncio.Task[float | None] | None, source: StreamSource[Any], raw: Msg
    ) -> float | None:
        """Handle ``raw`` once the previous message of its key is settled.

        When that one was handed back (nak'ed: its redelivery comes later), ``raw`` is handed
        back too, unprocessed and with the same delay, so it does not overtake it. Returns
        the nak delay when ``raw`` was handed back, ``None`` when it was settled.
        """
        if prev is not None:
            if not prev.done():
                await asyncio.wait([prev])
            delay = None if prev.cancelled() or prev.exception() else prev.result()
            if delay is not None:
                with contextlib.suppress(Exception):
                    await raw.nak(delay=delay or None)
                self._settled(raw)
                return delay
        return await self._handle_safely(source, raw, in_place=True)

    async def _handle_safely(
        self,
        source: StreamSource[Any],
        raw: Msg,
        *,
        in_place: bool = False,
        key_error: Exception | None = None,
    ) -> float | None:
        """:meth:`_handle`, but an unexpected error (a bug) naks the message, never loses it.

        Returns the nak delay when the message was handed back for redelivery, else ``None``.
        """
        try:
            return await self._handle(source, raw, in_place=in_place, key_error=key_error)
        except Exception as exc:  # a bug or a failing state store: never lose the message
            _log.error("flow.handler_failed", flow=self.name, error=repr(exc))
            if self._inflight.get(id(raw)) is raw:
                with contextlib.suppress(Exception):
                    await raw.nak()
                self._settled(raw)
            return 0.0

    async def _ticker(self) -> None:
        interval = max(0.05, min(s.ack_wait for s in self.sources) / 3)
        while True:
            await asyncio.sleep(interval)
            for raw in list(self._inflight.values()):
                with contextlib.suppress(Exception):
                    await raw.in_progress()

    # -- one message -----------------------------------------------------------------------

    def _settled(self, raw: Msg) -> None:
        self._inflight.pop(id(raw), None)
        self.metrics.in_flight = len(self._inflight)
        self._capacity.set()

    async def _handle(
        self,
        source: StreamSource[Any],
        raw: Msg,
        *,
        in_place: bool = False,
        key_error: Exception | None = None,
    ) -> float | None:
        """Run ``raw`` through the stages and settle it; the nak delay if handed back.

        ``in_place`` (keyed mode): a failure is retried here, after its backoff delay, up to
        ``max_deliver`` attempts in all, so later messages of the key wait for it instead of
        overtaking a nak'ed redelivery. ``key_error``: ``key()`` failed on this message.
        """
        # One span per message, continuing the producer's trace (W3C traceparent in its
        # headers); outputs published inside it carry this span's context on. Without a
        # tracer provider or a trace in the message, none (optional_span): making it and
        # extracting the context took a fifth of a no-op message's time.
        attributes = {"jsflow.flow": self.name, "messaging.destination.name": raw.subject}
        with optional_span(
            "jsflow.flow.message",
            attributes,
            headers=raw.headers or {},
            kind=trace.SpanKind.CONSUMER,
        ):
            return await self._run_message(source, raw, in_place=in_place, key_error=key_error)

    async def _run_message(
        self,
        source: StreamSource[Any],
        raw: Msg,
        *,
        in_place: bool,
        key_error: Exception | None,
    ) -> float | None:
        started = time.monotonic()
        meta = raw.metadata
        delivery = meta.num_delivered
        instruments().flow_received.add(1, self._labels)
        if delivery > 1:
            self.metrics.redelivered += 1
        try:
            msg = source.decode(raw, meta)
        except JsflowError as exc:
            settlement = await self._policy.dead_letter_msg(
                raw,
                exc,
                delivery,
                stage="decode",
                dedupe_id=self._dead_id(source, raw),
                ident=f"{meta.stream}:{meta.sequence.stream}",
            )
            return await self._after_settle(
                raw, None, settlement, stage="decode", delivery=delivery, error=exc
            )
        if key_error is not None:
            failure = StageFailure("key", key_error)
            return await self._fail(source, raw, msg, failure, delivery)
        attempt = delivery
        while True:
            run = Run()
            try:
                if self._state is not None:
                    await self._record(msg, MessageStatus.RUNNING, "")
                outputs = await run_stages(self._compiled, msg, run)
                if self.sink is not None and outputs:
                    run.stage = f"sink:{self.sink!r}"
                    await self._policy.ride_out(
                        functools.partial(self._publish, source, msg, outputs),
                        raw,
                        what="sink publish",
                        ident=msg.id,
                    )
                if self._has_batches:
                    run.settle(None)
                    await run.wait_batches()
                break
            except asyncio.CancelledError:
                run.settle(FlowError("flow cancelled"))
                raise
            except Exception as exc:
                failure = exc if isinstance(exc, StageFailure) else StageFailure(run.stage, exc)
                run.settle(failure.error)
                if (
                    not in_place
                    or self._policy.gives_up(failure.error, attempt)
                    or self._stopping.is_set()
                ):
                    return await self._fail(source, raw, msg, failure, attempt)
                if not await self._retry_pause(msg, failure, attempt):
                    return await self._fail(
                        source, raw, msg, failure, attempt
                    )  # stopping: hand back
                attempt += 1
                msg = msg.replace(delivery=attempt)
        if self._stopping.is_set():  # draining: stop() returns only once the server has it
            await self._policy.ack_confirmed(raw)
        else:
            await self._policy.ack(raw)
        self._settled(raw)
        instruments().flow_acked.add(1, self._labels)
        metrics = self.metrics
        metrics.processed += 1
        metrics.latency.observe(time.monotonic() - started)
        if self._state is not None:
            await self._record(msg, MessageStatus.DONE, run.stage)
        return None

    def _delay(self, attempt: int) -> float:
        return self._policy.delay(attempt)

    async def _retry_pause(self, msg: Message[Any], failure: StageFailure, attempt: int) -> bool:
        """Count a failed attempt retried in place and wait out its backoff.

        Returns ``False`` when :meth:`stop` interrupted the wait (the caller hands it back).
        """
        self.metrics.failed += 1
        delay = self._delay(attempt)
        _log.info(
            "flow.retry_in_place",
            flow=self.name,
            id=msg.id,
            correlation_id=msg.correlation_id,
            stage=failure.stage,
            delivery=attempt,
            delay=delay,
            error=repr(failure.error),
        )
        await self._record(msg, MessageStatus.FAILED, failure.stage, repr(failure.error))
        stopping = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait([stopping], timeout=delay)
        finally:
            stopping.cancel()
        if self._stopping.is_set():
            self.metrics.failed -= 1  # _fail counts this attempt when it hands it back
            return False
        return True

    async def _publish(
        self, source: StreamSource[Any], msg: Message[Any], outputs: list[Message[Any]]
    ) -> None:
        assert self.sink is not None
        sink = self.sink
        outputs = [_continue_trace(out, msg) for out in outputs]
        prefix = _output_id_prefix(msg.stream, msg.sequence, source.durable)
        if len(outputs) == 1:
            await sink.publish(outputs[0], f"{prefix}:0")
            return
        results = await asyncio.gather(
            *(sink.publish(out, f"{prefix}:{i}") for i, out in enumerate(outputs)),
            return_exceptions=True,
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result

    @staticmethod
    def _dead_id(source: StreamSource[Any], raw: Msg) -> str:
        meta = raw.metadata
        return f"{_output_id_prefix(meta.stream, meta.sequence.stream, source.durable)}:dead"

    async def _fail(
        self,
        source: StreamSource[Any],
        raw: Msg,
        msg: Message[Any],
        failure: StageFailure,
        delivery: int,
    ) -> float | None:
        """Settle a failure with the policy (nak, or dead letter); the nak delay if nak'ed."""
        self.metrics.failed += 1
        settlement = await self._policy.fail(
            raw,
            failure.error,
            delivery,
            stage=failure.stage,
            dedupe_id=self._dead_id(source, raw),
            ident=msg.id,
        )
        return await self._after_settle(
            raw, msg, settlement, stage=failure.stage, delivery=delivery, error=failure.error
        )

    async def _after_settle(
        self,
        raw: Msg,
        msg: Message[Any] | None,
        settlement: Settlement,
        *,
        stage: str,
        delivery: int,
        error: BaseException,
    ) -> float | None:
        """Bookkeeping once the policy settled a failure; the nak delay if handed back."""
        self._settled(raw)
        if settlement.handed_back:
            instruments().flow_retried.add(1, self._labels)
            if msg is not None:
                await self._record(msg, MessageStatus.FAILED, stage, repr(error))
            return settlement.delay
        self.metrics.dead_lettered += 1
        instruments().flow_dead_lettered.add(1, self._labels)
        if self._state is not None:
            if msg is not None:
                ident, correlation = msg.id, msg.correlation_id
            else:
                meta = raw.metadata
                ident, correlation = f"{meta.stream}:{meta.sequence.stream}", ""
            await self._state.record(
                ident,
                MessageStatus.DEAD,
                stage=stage,
                attempts=delivery,
                error=repr(error)[:1000],
                correlation_id=correlation,
            )
        return None

    async def _record(
        self, msg: Message[Any], status: MessageStatus, stage: str, error: str = ""
    ) -> None:
        if self._state is not None:
            await self._state.record(
                msg.id,
                status,
                stage=stage,
                attempts=msg.delivery,
                error=error,
                correlation_id=msg.correlation_id,
            )


def _continue_trace(out: Message[Any], source: Message[Any]) -> Message[Any]:
    """``out`` carrying the current span's trace context (this message's span), unless a
    stage gave it a context of its own (the ``Tracing`` middleware's stage spans)."""
    if out.headers.get(_TRACEPARENT) != source.headers.get(_TRACEPARENT):
        return out
    carrier = dict(inject_context({}))
    return out.with_headers(**carrier) if carrier else out
