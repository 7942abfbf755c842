"""Streams and subjects: creating or binding a stream, which subjects a pattern captures."""

from __future__ import annotations

from typing import TYPE_CHECKING

from jsflow._js import api, codes, js_errors, map_nats_errors

if TYPE_CHECKING:
    from jsflow.client import Client

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
    client: Client, name: str, subjects: list[str], *, duplicate_window: float = 120.0
) -> None:
    """Create stream ``name`` (file storage) capturing ``subjects``, or bind it when it exists.

    An existing stream is left as it is (its subjects and limits are the operator's).
    """
    js = client.js
    with map_nats_errors(subject=",".join(subjects)):
        try:
            await js.stream_info(name)
            return
        except js_errors.NotFoundError:
            pass
        config = api.StreamConfig(
            name=name,
            subjects=subjects,
            storage=api.StorageType.FILE,
            duplicate_window=duplicate_window,
        )
        try:
            await js.add_stream(config)
        except js_errors.BadRequestError as exc:
            if exc.err_code != codes.STREAM_NAME_IN_USE:  # created concurrently
                raise


async def stream_capturing(client: Client, subject: str) -> str | None:
    """The name of the stream that captures ``subject``, or ``None`` when none does."""
    with map_nats_errors(subject=subject):
        try:
            return await client.js.find_stream_name_by_subject(subject)
        except js_errors.NotFoundError:
            return None
