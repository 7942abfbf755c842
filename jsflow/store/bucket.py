"""The KV bucket on the server: creating or binding its stream, checking that a stream of
that name is one, and :class:`Bucket`, the names and connection every request on it uses."""

from __future__ import annotations

import contextlib
from typing import Any

from jsflow._js import api, codes, internals, js_errors, map_nats_errors, streams
from jsflow.connection import Connection
from jsflow.errors import BucketError, ConfigError

__all__ = ["Bucket", "check_kv_stream", "create_or_bind"]


class Bucket:
    """The bound KV bucket ``name``: its stream ``KV_<name>``, its subjects ``$KV.<name>.<key>``
    and the connection requests on it go through.

    ``direct_reads``: whether gets may be answered by any replica. A replicated bucket's
    followers may answer direct gets from behind the leader; reads then go to the leader so
    a get after an acknowledged write always sees it.
    """

    __slots__ = ("connection", "direct_reads", "name", "prefix", "stream")

    def __init__(self, connection: Connection, name: str, *, leader_reads: bool = False) -> None:
        self.connection = connection
        self.name = name
        self.stream = f"KV_{name}"
        self.prefix = f"$KV.{name}."
        self.direct_reads = not leader_reads

    def subject(self, key_or_pattern: str) -> str:
        """The subject of a key (or of a pattern of keys)."""
        return self.prefix + key_or_pattern

    def key_of(self, subject: str) -> str:
        """The key a subject of this bucket names."""
        return subject[len(self.prefix) :]

    async def close_subscription(self, sub: Any) -> None:
        """Unsubscribe and delete the (ordered, ephemeral) consumer behind ``sub``.

        Unsubscribing alone leaves the consumer on the server until its inactive threshold
        passes; consumers are scarce, so delete it now (best effort: it may already be gone).
        """
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
        name = internals.consumer_name(sub)
        if name and not self.connection.is_closed:
            with contextlib.suppress(Exception):
                await self.connection.js.delete_consumer(self.stream, name)


def check_kv_stream(bucket: str, info: api.StreamInfo) -> None:
    """Raise :class:`BucketError` unless the stream ``KV_<bucket>`` is a KV bucket.

    A plain stream that happens to carry that name would be bound and fail later, on the
    first write (no stream captures ``$KV.<bucket>.*``) or read.
    """
    subjects = list(info.config.subjects or [])
    if subjects != [f"$KV.{bucket}.>"]:
        raise BucketError(
            f"stream KV_{bucket} exists but is not the KV bucket {bucket!r}: its subjects are "
            f"{subjects[:5]!r}, a bucket's are ['$KV.{bucket}.>']; use another bucket name or "
            "delete that stream"
        )


async def create_or_bind(
    client: Connection,
    bucket: str,
    *,
    ttl: float | None,
    history: int,
    replicas: int,
    max_value_size: int | None,
) -> int:
    """Bind the KV ``bucket``, or create it with this config when absent (arguments already
    validated); returns its replica count (an existing bucket's own)."""
    js = client.js
    with map_nats_errors(bucket=bucket):
        try:
            info = await js.stream_info(f"KV_{bucket}")
            check_kv_stream(bucket, info)
            await streams.bound_replicas(js, info, replicas)  # never fewer copies than asked
            return int(info.config.num_replicas or 1)
        except js_errors.NotFoundError:
            config = api.KeyValueConfig(
                bucket=bucket,
                history=history,
                ttl=ttl,
                replicas=replicas,
                direct=True,
                max_value_size=max_value_size or -1,
                storage=api.StorageType.FILE,
                # Markers make server-side expiry of per-key TTLs visible to watchers.
                limit_marker_ttl=1.0,
            )
            try:
                await js.create_key_value(config)
            except js_errors.APIError as exc:
                if exc.err_code in codes.REPLICAS_UNAVAILABLE:
                    raise ConfigError(
                        f"bucket {bucket!r}: replicas={replicas} is more than the servers can "
                        f"hold ({exc.description}); use at most as many replicas as the "
                        "cluster has servers"
                    ) from None
                if exc.err_code != codes.STREAM_NAME_IN_USE:
                    raise BucketError(f"cannot create bucket {bucket!r}: {exc}") from exc
                # created concurrently (with another config): bind to it, if it is a bucket
                info = await js.stream_info(f"KV_{bucket}")
                check_kv_stream(bucket, info)
                await streams.bound_replicas(js, info, replicas)
                return int(info.config.num_replicas or 1)
            if replicas > 1:
                await streams.await_leader(js, f"KV_{bucket}", timeout=client.timeout)
            return replicas
