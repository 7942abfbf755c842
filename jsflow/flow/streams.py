"""Streams and subjects: creating or binding a stream, which subjects a pattern captures."""

from __future__ import annotations

from typing import TYPE_CHECKING

from jsflow._js import api, js_errors, map_nats_errors, streams
from jsflow.connection import check_replicas

if TYPE_CHECKING:
    from jsflow.connection import Connection

__all__ = ["ensure_stream", "stream_capturing", "subject_matches"]


def subject_matches(pattern: str, subject: str) -> bool:
    """Whether the literal ``subject`` matches ``pattern`` (NATS wildcards).

    ``*`` matches exactly one token, a final ``>`` one or more; every other token must be
    equal. Pure and total: any strings give an answer.
    """
    pat = pattern.split(".")
    sub = subject.split(".")
    for i, token in enumerate(pat):
        if token == ">" and i == len(pat) - 1:
            return len(sub) > i
        if i >= len(sub) or (token != "*" and token != sub[i]):
            return False
    return len(sub) == len(pat)


async def ensure_stream(
    client: Connection,
    name: str,
    subjects: list[str],
    *,
    duplicate_window: float = 120.0,
    replicas: int | None = None,
) -> None:
    """Create stream ``name`` (file storage, ``replicas`` copies: the client's by default)
    capturing ``subjects``, or bind it when it exists.

    An existing stream is left as it is (its subjects, limits and replicas are the
    operator's).
    """
    config = api.StreamConfig(
        name=name,
        subjects=subjects,
        storage=api.StorageType.FILE,
        duplicate_window=duplicate_window,
        num_replicas=check_replicas(replicas, client.replicas),
    )
    await streams.create_or_bind(client.js, config, timeout=client.timeout)


async def stream_capturing(client: Connection, subject: str) -> str | None:
    """The name of the stream that captures ``subject``, or ``None`` when none does."""
    with map_nats_errors(subject=subject):
        try:
            return await client.js.find_stream_name_by_subject(subject)
        except js_errors.NotFoundError:
            return None
