"""Creating or binding a stream: shared by sources, sinks and the layers above."""

from __future__ import annotations

from typing import TYPE_CHECKING

from jsflow._js import api, js_errors, map_nats_errors

if TYPE_CHECKING:
    from jsflow.client import Client

__all__ = ["ensure_stream"]


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
            if exc.err_code != 10058:  # created concurrently with the same name
                raise
