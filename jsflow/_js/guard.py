"""The guarded connection: every protocol line is checked against the server's limits before
it is sent.

The server closes a connection that sends a control line longer than ``max_control_line``
(4 KiB by default) or a message whose headers plus body exceed ``max_payload``; nats-py counts
neither the control line nor the headers, and does not reconnect after such a close, so one
long key or one large dead letter would cut every object on the client off for good.
:class:`GuardedClient` overrides the two places nats-py writes PUB/HPUB and SUB lines, so
every publish, request, ack and subscription (nats-py's own JetStream and KV calls
included) is checked here, once, and fails with a typed error instead.
"""

from __future__ import annotations

from typing import Any

from jsflow._js.fastpath import FastPathClient
from jsflow.errors import ControlLineTooLongError, PayloadTooLargeError

__all__ = ["DEFAULT_MAX_CONTROL_LINE", "GuardedClient", "headers_size"]

DEFAULT_MAX_CONTROL_LINE = 4096  # nats-server's default max_control_line
_HDR_LINE = len(b"NATS/1.0\r\n")
# "HPUB " + " " separators + two sizes of up to 10 digits + CRLF
_HPUB_OVERHEAD = 5 + 3 + 20 + 2
_SUB_OVERHEAD = 4 + 2 + 20 + 2


def headers_size(headers: dict[str, str] | None) -> int:
    """Bytes the headers take on the wire (what the server counts against ``max_payload``)."""
    if not headers:
        return 0
    size = _HDR_LINE + 2
    for key, value in headers.items():
        size += len(str(key).strip().encode()) + 4 + len(str(value).strip().encode())
    return size


def _where(subject: str) -> str:
    return subject if len(subject) <= 60 else f"{subject[:57]}... ({len(subject)} chars)"


class GuardedClient(FastPathClient):
    """A nats-py client whose PUB/HPUB and SUB lines never exceed the server's limits."""

    def __init__(self) -> None:
        super().__init__()
        self.max_control_line = DEFAULT_MAX_CONTROL_LINE

    def check_publish(
        self, subject: str, reply: str, payload_size: int, headers: dict[str, str] | None
    ) -> None:
        """Raise :class:`ControlLineTooLongError` or :class:`PayloadTooLargeError` when the
        server would refuse this message by closing the connection."""
        line = len(subject) + len(reply) + _HPUB_OVERHEAD
        if line > self.max_control_line:
            if not subject.isascii() or not reply.isascii():
                line = len(subject.encode()) + len(reply.encode()) + _HPUB_OVERHEAD
            if line > self.max_control_line:
                raise ControlLineTooLongError(
                    f"publish to {_where(subject)!r} needs a {line}-byte protocol line; the "
                    f"server allows {self.max_control_line} (max_control_line): shorten the "
                    "subject (its key, bucket or stream name)"
                )
        limit = int(self._max_payload)
        bound = payload_size
        if headers:
            # A bound first (UTF-8 takes at most 4 bytes a character): the exact size, which
            # encodes every header, only when the bound comes near the limit.
            chars = _HDR_LINE
            try:
                for name, value in headers.items():
                    chars += len(name) + len(value) + 4
            except TypeError:  # not str: measured as headers_size() would send them
                chars = limit
            bound += 4 * chars
        if bound > limit and (total := payload_size + headers_size(headers)) > limit:
            raise PayloadTooLargeError(
                f"message to {_where(subject)!r} is {total} bytes with its headers; the "
                f"server accepts {limit} (max_payload)"
            )

    async def publish(
        self,
        subject: str,
        payload: bytes = b"",
        reply: str = "",
        headers: dict[str, str] | None = None,
    ) -> None:
        """nats-py's ``publish``, checked against the server's limits first."""
        self.check_publish(subject, reply, len(payload), headers)
        await super().publish(subject, payload, reply, headers)

    async def subscribe(  # type: ignore[override]
        self, subject: str, queue: str = "", **kwargs: Any
    ) -> Any:
        """nats-py's ``subscribe``, with the SUB line checked against ``max_control_line``."""
        line = len(subject.encode()) + len(queue.encode()) + _SUB_OVERHEAD
        if line > self.max_control_line:
            raise ControlLineTooLongError(
                f"subscription to {_where(subject)!r} needs a {line}-byte protocol line; the "
                f"server allows {self.max_control_line} (max_control_line)"
            )
        return await super().subscribe(subject, queue, **kwargs)
