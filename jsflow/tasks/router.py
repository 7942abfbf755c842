"""``EventRouter``: expand domain events into task requests, declaratively and idempotently.

    router = EventRouter(client)
    router.on("device.updated").request("recalculate_fields", "sync_external_systems")
    await router.run()   # until cancelled

One event becomes its set of task requests in one atomic batch publish; each task id is a
hash of the event's identity (its ``Nats-Msg-Id``, else stream and sequence) and the rule,
so a redelivered event finds its tasks already there and publishes nothing new.

Redelivery is bounded: an event whose expansion fails is nak'ed with ``backoff`` delays and,
after ``max_deliver`` attempts (at once when it cannot be mapped), published to the
``dead_letter`` subject with its original body and headers plus the error headers of the
flow layer (``Jsflow-Error-Type``, ``Jsflow-Error-Message``, ``Jsflow-Delivery``,
``Jsflow-Failed-At``), then terminated. Without a dead letter it is logged and terminated.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from os import PathLike
from typing import TYPE_CHECKING, Any

from jsflow._js import Msg, api, js_errors, map_nats_errors, nats_errors
from jsflow.errors import CodecError, ConfigError, JsflowError
from jsflow.flow.dead_letter import publish_dead_letter
from jsflow.flow.streams import ensure_stream
from jsflow.keys import validate_pattern
from jsflow.observability import get_logger, tracer
from jsflow.tasks.backend import TaskBackend, new_state
from jsflow.tasks.payload import raw_args
from jsflow.tasks.streams import validate_name

if TYPE_CHECKING:
    from jsflow.client import Client

__all__ = ["EventRouter", "Rule"]

_log = get_logger(__name__)
_FETCH_BATCH = 32
_FETCH_WAIT = 1.0
# Deliveries the server still allows beyond ``max_deliver``, for a dead-letter publish that
# failed (the event is nak'ed and tried again); past them the server stops redelivering.
_DEAD_LETTER_MARGIN = 10


@dataclass(slots=True)
class Rule:
    """Events matching ``pattern`` request ``tasks``; ``map`` turns the event's decoded data
    into the task argument (``None`` from ``map`` skips the event)."""

    pattern: str
    tasks: tuple[str, ...] = ()
    map: Callable[[Any], Any] | None = None
    index: int = 0

    def request(self, *task_names: str, map: Callable[[Any], Any] | None = None) -> Rule:
        """Name the tasks one matching event requests (returns the rule, for chaining)."""
        if not task_names:
            raise ConfigError(f"rule {self.pattern!r} needs at least one task name")
        for name in task_names:
            validate_name(name)
        if map is not None and not callable(map):
            raise ConfigError("map must be callable")
        self.tasks = tuple(dict.fromkeys((*self.tasks, *task_names)))
        self.map = map if map is not None else self.map
        return self

    def matches(self, subject: str) -> bool:
        """Whether ``subject`` matches this rule's pattern (NATS wildcards)."""
        pat = self.pattern.split(".")
        sub = subject.split(".")
        for i, token in enumerate(pat):
            if token == ">":
                return len(sub) > i
            if i >= len(sub) or (token != "*" and token != sub[i]):
                return False
        return len(sub) == len(pat)


def _decode_event(data: bytes) -> Any:
    try:
        return json.loads(data) if data else None
    except (ValueError, UnicodeDecodeError):
        return data


@dataclass(slots=True)
class _Stats:
    events: int = 0
    requested: int = 0
    errors: int = 0
    dead_lettered: int = 0


class EventRouter:
    """Consumes domain events durably from ``stream`` and requests the tasks its rules name.

    ``stream`` is created (capturing the rules' patterns) when it does not exist; ``durable``
    names the router's consumer, shared by every router replica.

    An event whose expansion fails is nak'ed with the delay ``backoff[attempt-1]`` (the last
    value repeats); its ``max_deliver``-th failure (or its first, when a rule's ``map`` cannot
    handle it) publishes it to ``dead_letter`` with the original body and headers plus
    ``Jsflow-Error-Type``, ``Jsflow-Error-Message``, ``Jsflow-Delivery`` and
    ``Jsflow-Failed-At``, then terminates it; with ``dead_letter=None`` it is logged as an
    error and terminated. The server-side consumer is bounded as well (``max_deliver`` plus
    a margin for failed dead-letter publishes), so no event is ever redelivered forever.
    The dead-letter subject must be captured by a stream.
    """

    def __init__(
        self,
        client: Client,
        *,
        stream: str = "JSFLOW_EVENTS",
        durable: str = "jsflow_router",
        ack_wait: float = 30.0,
        max_deliver: int = 5,
        backoff: Sequence[float] = (1.0, 5.0, 30.0),
        dead_letter: str | None = None,
    ) -> None:
        validate_name(stream, "stream name")
        validate_name(durable, "durable name")
        if not ack_wait >= 1.0:
            raise ConfigError(f"ack_wait must be >= 1 second, got {ack_wait}")
        if isinstance(max_deliver, bool) or not isinstance(max_deliver, int) or max_deliver < 1:
            raise ConfigError(f"max_deliver must be an int >= 1, got {max_deliver!r}")
        delays = [float(b) for b in backoff]
        if any(not (0 <= b < float("inf")) for b in delays):
            raise ConfigError(f"backoff delays must be finite and >= 0, got {list(backoff)}")
        if dead_letter is not None:
            validate_pattern(dead_letter)
            if "*" in dead_letter.split(".") or ">" in dead_letter.split("."):
                raise ConfigError(f"dead_letter must be a subject, not a pattern: {dead_letter!r}")
        self.client = client
        self.stream = stream
        self.durable = durable
        self.ack_wait = ack_wait
        self.max_deliver = max_deliver
        self.backoff = delays
        self.dead_letter = dead_letter
        self.rules: list[Rule] = []
        self.stats = _Stats()
        self._backend: TaskBackend | None = None

    def on(self, subject_pattern: str) -> Rule:
        """A new rule for events on ``subject_pattern`` (``*`` and ``>`` wildcards allowed)."""
        validate_pattern(subject_pattern)
        rule = Rule(subject_pattern, index=len(self.rules))
        self.rules.append(rule)
        return rule

    @classmethod
    def from_toml(cls, client: Client, path: str | PathLike[str], **options: Any) -> EventRouter:
        """A router whose rules come from a TOML file::

        stream = "JSFLOW_EVENTS"      # optional, as are durable, max_deliver, backoff
        dead_letter = "events.dead"   # and dead_letter
        [[rule]]
        on = "device.updated"
        request = ["recalculate_fields", "sync_external_systems"]
        """
        try:
            with open(path, "rb") as fh:
                doc = tomllib.load(fh)
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read router rules from {path}: {exc}") from exc
        for key in ("stream", "durable", "max_deliver", "backoff", "dead_letter"):
            if key in doc and key not in options:
                options[key] = doc[key]
        router = cls(client, **options)
        rules = doc.get("rule", [])
        if not isinstance(rules, list) or not rules:
            raise ConfigError(f"{path}: needs at least one [[rule]] table")
        for i, item in enumerate(rules):
            if not isinstance(item, dict) or not isinstance(item.get("on"), str):
                raise ConfigError(f'{path}: rule {i} needs on = "<subject pattern>"')
            names = item.get("request")
            if isinstance(names, str):
                names = [names]
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                raise ConfigError(f'{path}: rule {i} needs request = ["<task>", ...]')
            router.on(item["on"]).request(*names)
        return router

    # -- expansion -------------------------------------------------------------------------

    @staticmethod
    def task_id(event_identity: str, rule: Rule, task_name: str) -> str:
        """The deterministic id of the task ``rule`` requests for an event."""
        digest = hashlib.sha256(f"{event_identity}|{rule.index}|{task_name}".encode())
        return digest.hexdigest()[:32]

    async def expand(self, msg: Msg) -> list[str]:
        """Request the tasks the rules name for one event; returns their ids (idempotent)."""
        backend = await self._ensure_backend()
        headers = msg.headers or {}
        identity = headers.get("Nats-Msg-Id")
        if not identity:
            meta = msg.metadata
            identity = f"{meta.stream}:{meta.sequence.stream}"
        states = []
        decoded: Any = ...
        for rule in self.rules:
            if not rule.matches(msg.subject):
                continue
            if rule.map is None:
                arg = bytes(msg.data or b"")
            else:
                if decoded is ...:
                    decoded = _decode_event(msg.data or b"")
                try:
                    mapped = rule.map(decoded)
                except Exception as exc:
                    raise CodecError(
                        f"rule {rule.pattern!r} map failed: {type(exc).__name__}: {exc}"
                    ) from exc
                if mapped is None:
                    continue
                try:
                    arg = json.dumps(mapped, separators=(",", ":")).encode()
                except (TypeError, ValueError) as exc:
                    raise CodecError(
                        f"rule {rule.pattern!r} map result is not JSON: {exc}"
                    ) from exc
            for name in rule.tasks:
                task_id = self.task_id(identity, rule, name)
                data, ref = await backend.externalize(f"{task_id}.args", raw_args(arg))
                states.append(new_state(task_id, name, data, ref))
        if states:
            with tracer().start_as_current_span("jsflow.tasks.route") as span:
                span.set_attribute("jsflow.subject", msg.subject)
                span.set_attribute("jsflow.tasks", len(states))
                await backend.request(states)
        return [s.id for s in states]

    async def _ensure_backend(self) -> TaskBackend:
        if self._backend is None:
            self._backend = await TaskBackend.open(self.client)
        return self._backend

    # -- consuming -------------------------------------------------------------------------

    async def _bind(self) -> Any:
        if not self.rules:
            raise ConfigError("the router has no rules: add some with router.on(...)")
        js = self.client.js
        patterns = list(dict.fromkeys(r.pattern for r in self.rules))
        await ensure_stream(self.client, self.stream, patterns)
        with map_nats_errors(subject=self.stream):
            config = api.ConsumerConfig(
                durable_name=self.durable,
                ack_policy=api.AckPolicy.EXPLICIT,
                deliver_policy=api.DeliverPolicy.ALL,
                ack_wait=self.ack_wait,
                max_deliver=self.max_deliver + _DEAD_LETTER_MARGIN,
                filter_subjects=patterns if len(patterns) > 1 else None,
                filter_subject=patterns[0] if len(patterns) == 1 else None,
            )
            try:
                await js.add_consumer(self.stream, config)
            except js_errors.BadRequestError as exc:
                _log.info("tasks.router_consumer_exists", consumer=self.durable, detail=str(exc))
            return await js.pull_subscribe_bind(durable=self.durable, stream=self.stream)

    async def run(self) -> None:
        """Consume domain events until cancelled; each is acked after its tasks are durable."""
        await self._ensure_backend()
        psub = await self._bind()
        errors = 0
        try:
            while True:
                try:
                    msgs = await psub.fetch(_FETCH_BATCH, timeout=_FETCH_WAIT)
                except (TimeoutError, nats_errors.TimeoutError):
                    continue
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # connection trouble: back off (bounded), go on
                    errors += 1
                    _log.warning("tasks.router_fetch_failed", error=repr(exc))
                    await asyncio.sleep(min(5.0, 0.1 * 2**errors))
                    continue
                errors = 0
                for msg in msgs:
                    await self._route(msg)
        finally:
            with contextlib.suppress(Exception):
                await psub.unsubscribe()

    async def _route(self, msg: Msg) -> None:
        self.stats.events += 1
        delivery = int(msg.metadata.num_delivered or 1)
        try:
            ids = await self.expand(msg)
        except CodecError as exc:  # a map that cannot handle this event: never retry it
            self.stats.errors += 1
            await self._dead_letter(msg, exc, delivery)
            return
        except Exception as exc:  # transient: redelivered after its backoff, a bounded number
            self.stats.errors += 1
            if delivery >= self.max_deliver:
                await self._dead_letter(msg, exc, delivery)
                return
            delay = self._delay(delivery)
            _log.warning(
                "tasks.router_failed",
                subject=msg.subject,
                delivery=delivery,
                delay=delay,
                error=repr(exc),
            )
            await msg.nak(delay=delay or None)
            return
        self.stats.requested += len(ids)
        await msg.ack()

    def _delay(self, delivery: int) -> float:
        """The nak delay after failed attempt ``delivery`` (1-based; the last value repeats)."""
        return self.backoff[min(delivery, len(self.backoff)) - 1] if self.backoff else 0.0

    async def _dead_letter(self, msg: Msg, error: BaseException, delivery: int) -> None:
        """Publish ``msg`` to the dead letter (original body and headers plus the error) and
        terminate it; nak it instead when that publish fails (bounded by the server)."""
        meta = msg.metadata
        ident = f"{meta.stream}:{meta.sequence.stream}"
        if self.dead_letter is None:
            _log.error(
                "tasks.router_dropped_without_dead_letter",
                subject=msg.subject,
                id=ident,
                delivery=delivery,
                error=repr(error),
            )
        else:
            try:
                await publish_dead_letter(
                    self.client,
                    self.dead_letter,
                    data=msg.data,
                    headers=msg.headers,
                    subject=msg.subject,
                    error=error,
                    delivery=delivery,
                    dedupe_id=f"{ident}:{self.durable}:dead",
                )
            except JsflowError as exc:
                _log.error(
                    "tasks.router_dead_letter_failed",
                    subject=msg.subject,
                    id=ident,
                    dead_letter=self.dead_letter,
                    error=repr(exc),
                )
                delay = self.backoff[-1] if self.backoff else 0.0
                await msg.nak(delay=delay or None)
                return
            _log.warning(
                "tasks.router_dead_lettered",
                subject=msg.subject,
                id=ident,
                dead_letter=self.dead_letter,
                delivery=delivery,
                error=repr(error),
            )
        self.stats.dead_lettered += 1
        await msg.term()
