"""``EventRouter``: expand domain events into task requests, declaratively and idempotently.

    router = EventRouter(client)
    router.on("device.updated").request("recalculate_fields", "sync_external_systems")
    await router.run()   # until cancelled

One event becomes its set of task requests in one atomic batch publish; each task id is a
hash of the event's identity (its stream and sequence) and the rule, so a redelivered event
finds its tasks already there and publishes nothing new. Identity is the stored message,
not its ``Nats-Msg-Id``: two events that reuse an id after the server's duplicate window
are two stored messages and each gets its tasks (deduping publishes inside the window is
the server's job), and no remote header value ever becomes part of a key.

Redelivery is bounded: an event whose expansion fails is nak'ed with ``backoff`` delays and,
after ``max_deliver`` attempts (at once when it cannot be mapped), published to the
``dead_letter`` subject with its original body and headers plus the error headers of the
flow layer (``Jsflow-Error-Type``, ``Jsflow-Error-Message``, ``Jsflow-Delivery``,
``Jsflow-Failed-At``), then terminated. Without a dead letter it is logged and terminated.
Consuming and settling are the flow layer's shared mechanism (:mod:`jsflow.flow.consume`).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from os import PathLike
from typing import TYPE_CHECKING, Any

from jsflow._js import Msg, Puller, api, js_errors, map_nats_errors
from jsflow._validate import check_name, check_subject, duration, one_of
from jsflow.errors import CodecError, ConfigError
from jsflow.flow.consume import OUTAGE_WINDOW, Outcome, SettlePolicy, fetch_loop
from jsflow.flow.dead_letter import DeadLetter
from jsflow.flow.streams import ensure_stream, subject_matches
from jsflow.observability import extracted_context, get_logger, tracer
from jsflow.tasks.app import App
from jsflow.tasks.backend import TaskBackend
from jsflow.tasks.calls import raw_args
from jsflow.tasks.lifecycle import new_state
from jsflow.tasks.streams import DEFAULT_APP, app_scope, validate_name

if TYPE_CHECKING:
    from jsflow.client import Client

__all__ = ["EventRouter", "Rule"]

_log = get_logger(__name__)
_FETCH_BATCH = 32
_FETCH_WAIT = 1.0
_OPTIONS = (
    "app",
    "stream",
    "durable",
    "ack_wait",
    "max_deliver",
    "backoff",
    "dead_letter",
    "dead_letter_stream",
)
_RULE_KEYS = ("on", "request")


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
        return subject_matches(self.pattern, subject)


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
    error and terminated. Requests (and dead letters) that fail because the backbone is
    unavailable (a stream leader lost in a failover, a reconnect) are retried in place for
    up to ``outage_window`` seconds first, the event kept in progress, without spending
    its deliveries. The server-side consumer is bounded as well (``max_deliver`` plus
    a margin for failed dead-letter publishes), so no event is ever redelivered forever.
    The dead-letter subject must be literal, read by no rule (checked by :meth:`on`) and
    captured by a stream (checked by :meth:`run`, :class:`ConfigError` otherwise), or
    ``dead_letter_stream`` names the stream :meth:`run` creates for it.
    :meth:`run` ends with :class:`jsflow.ConnectionClosedError` once the connection is
    closed for good, and returns after :meth:`stop`.
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
        dead_letter_stream: str | None = None,
        app: str | App = DEFAULT_APP,
        outage_window: float = OUTAGE_WINDOW,
    ) -> None:
        # The app whose tasks the rules request (an App, or an app name: see App).
        self.app = app.scope if isinstance(app, App) else app_scope(one_of("app", app, str))
        self.stream = check_name("stream", stream)
        self.durable = check_name("durable", durable)
        self.ack_wait = duration("ack_wait", ack_wait, minimum=1.0)
        if dead_letter_stream is not None and dead_letter is None:
            raise ConfigError("dead_letter_stream needs a dead_letter subject")
        dead = DeadLetter(dead_letter, dead_letter_stream) if dead_letter is not None else None
        self._stop = asyncio.Event()
        self._policy = SettlePolicy(
            client,
            max_deliver=max_deliver,
            backoff=backoff,
            dead_letter=dead,
            component="tasks.router",
            name=durable,
            outage_window=outage_window,
            stop=self._stop,
        )
        self.client = client
        self.max_deliver = self._policy.max_deliver
        self.backoff = self._policy.backoff
        self.dead_letter = dead_letter
        self.rules: list[Rule] = []
        self.stats = _Stats()
        self._backend: TaskBackend | None = None

    def on(self, subject_pattern: str) -> Rule:
        """A new rule for events on ``subject_pattern`` (``*`` and ``>`` wildcards allowed).

        :class:`ConfigError` when the pattern captures the router's own dead letter.
        """
        check_subject("rule pattern", subject_pattern, wildcards=True)
        if self._policy.dead_letter is not None:
            self._policy.dead_letter.check_not_consumed([subject_pattern], "a router rule")
        rule = Rule(subject_pattern, index=len(self.rules))
        self.rules.append(rule)
        return rule

    @classmethod
    def from_toml(cls, client: Client, path: str | PathLike[str], **options: Any) -> EventRouter:
        """A router whose rules come from a TOML file::

        stream = "JSFLOW_EVENTS"      # optional, as are durable, ack_wait, max_deliver,
        dead_letter = "events.dead"   # backoff and dead_letter
        [[rule]]
        on = "device.updated"
        request = ["recalculate_fields", "sync_external_systems"]

        A key it does not know (a typo) raises :class:`ConfigError` naming it.
        """
        try:
            with open(path, "rb") as fh:
                doc = tomllib.load(fh)
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read router rules from {path}: {exc}") from exc
        unknown = sorted(set(doc) - {*_OPTIONS, "rule"})
        if unknown:
            raise ConfigError(f"{path}: unknown key(s) {unknown}; known: {[*_OPTIONS, 'rule']}")
        for key in _OPTIONS:
            if key in doc and key not in options:
                options[key] = doc[key]
        router = cls(client, **options)
        rules = doc.get("rule", [])
        if not isinstance(rules, list) or not rules:
            raise ConfigError(f"{path}: needs at least one [[rule]] table")
        for i, item in enumerate(rules):
            if not isinstance(item, dict) or not isinstance(item.get("on"), str):
                raise ConfigError(f'{path}: rule {i} needs on = "<subject pattern>"')
            extra = sorted(set(item) - set(_RULE_KEYS))
            if extra:
                raise ConfigError(
                    f"{path}: rule {i} has unknown key(s) {extra}; known: {list(_RULE_KEYS)}"
                )
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
        meta = msg.metadata  # the stored message, not a remote header, is the identity
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
                data, ref = await backend.payloads.put(f"{task_id}.args", raw_args(arg))
                states.append(new_state(task_id, name, data, ref))
        if states:
            # The tasks an event requests continue the trace of the event's producer.
            with tracer().start_as_current_span(
                "jsflow.tasks.route", context=extracted_context(msg.headers)
            ) as span:
                span.set_attribute("jsflow.subject", msg.subject)
                span.set_attribute("jsflow.tasks", len(states))
                await backend.requests.submit(states)
        return [s.id for s in states]

    async def _ensure_backend(self) -> TaskBackend:
        if self._backend is None:
            self._backend = await TaskBackend.open(self.client, app=self.app)
        return self._backend

    # -- consuming -------------------------------------------------------------------------

    async def _bind(self) -> Puller:
        if not self.rules:
            raise ConfigError("the router has no rules: add some with router.on(...)")
        js = self.client.js
        patterns = list(dict.fromkeys(r.pattern for r in self.rules))
        await ensure_stream(self.client, self.stream, patterns)
        if self._policy.dead_letter is not None:
            await self._policy.dead_letter.open(self.client)
        with map_nats_errors(subject=self.stream):
            config = api.ConsumerConfig(
                durable_name=self.durable,
                ack_policy=api.AckPolicy.EXPLICIT,
                deliver_policy=api.DeliverPolicy.ALL,
                ack_wait=self.ack_wait,
                max_deliver=self._policy.server_max_deliver,
                filter_subjects=patterns if len(patterns) > 1 else None,
                filter_subject=patterns[0] if len(patterns) == 1 else None,
            )
            try:
                await js.add_consumer(self.stream, config)
            except js_errors.BadRequestError as exc:  # exists with another config: share it
                _log.info("tasks.router_consumer_exists", consumer=self.durable, detail=str(exc))
            puller = Puller(self.client.nc, js, self.stream, self.durable)
            await puller.start()
        return puller

    async def run(self) -> None:
        """Consume domain events until cancelled or :meth:`stop`; each is acked after its
        tasks are durable. Ends with :class:`jsflow.ConnectionClosedError` when the
        connection is closed for good."""
        self._stop.clear()
        await self._ensure_backend()
        puller = await self._bind()
        try:
            await fetch_loop(
                puller,
                self._route_all,
                client=self.client,
                stop=self._stop,
                batch=_FETCH_BATCH,
                timeout=_FETCH_WAIT,
                name=f"router {self.durable!r}",
            )
        finally:
            await puller.close()

    def stop(self) -> None:
        """Make :meth:`run` return after the batch it is routing."""
        self._stop.set()

    async def _route_all(self, msgs: list[Msg]) -> None:
        for msg in msgs:
            await self._route(msg)

    async def _route(self, msg: Msg) -> None:
        self.stats.events += 1
        meta = msg.metadata
        delivery = int(meta.num_delivered or 1)
        try:
            ids = await self._policy.ride_out(lambda: self.expand(msg), msg, what="task requests")
        except Exception as exc:  # a CodecError (map failed) is dead-lettered at once
            self.stats.errors += 1
            ident = f"{meta.stream}:{meta.sequence.stream}"
            settlement = await self._policy.fail(
                msg, exc, delivery, dedupe_id=f"{ident}:{self.durable}:dead", ident=ident
            )
            if settlement.outcome in (Outcome.DEAD_LETTERED, Outcome.TERMINATED):
                self.stats.dead_lettered += 1
            return
        self.stats.requested += len(ids)
        await self._policy.ack(msg)
