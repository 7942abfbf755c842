"""Values of ``T`` to stored bytes and back, for one bucket: :class:`EntryCodec`.

Its errors name the bucket, key and revision involved; an encoded value over the bucket's
limit is refused before any I/O.
"""

from __future__ import annotations

from typing import Generic, TypeVar

from jsflow._js import Msg
from jsflow.codec import Codec
from jsflow.errors import CodecError, PayloadTooLargeError
from jsflow.store.bucket import Bucket
from jsflow.store.values import Change, Op, Raw
from jsflow.store.wire import op_of

__all__ = ["EntryCodec"]

T = TypeVar("T")


class EntryCodec(Generic[T]):
    """``codec`` bound to ``bucket``: encodes values up to ``max_value_size`` bytes."""

    __slots__ = ("_bucket", "_codec", "_max_value_size")

    def __init__(self, bucket: Bucket, codec: Codec[T], max_value_size: int) -> None:
        self._bucket = bucket
        self._codec = codec
        self._max_value_size = max_value_size

    def new(self) -> T:
        """The empty value ``T()``."""
        return self._codec.new()

    def decode(self, key: str, raw: Raw) -> T:
        """The value stored in ``raw`` (which holds data), else :class:`CodecError`."""
        assert raw.data is not None
        try:
            return self._codec.decode(raw.data)
        except Exception as exc:
            raise CodecError(
                f"cannot decode value: {type(exc).__name__}: {exc}",
                bucket=self._bucket.name,
                key=key,
                revision=raw.revision,
            ) from exc

    def encode(self, key: str, value: T) -> bytes:
        """The bytes to store for ``value``: :class:`CodecError` if it does not encode,
        :class:`PayloadTooLargeError` if they exceed the bucket's value size."""
        bucket = self._bucket.name
        try:
            data = self._codec.encode(value)
        except CodecError as exc:
            raise CodecError(str(exc), bucket=bucket, key=key) from exc
        except Exception as exc:
            raise CodecError(
                f"cannot encode {type(value).__name__}: {exc}", bucket=bucket, key=key
            ) from exc
        if len(data) > self._max_value_size:
            raise PayloadTooLargeError(
                f"value for key {key!r} in bucket {bucket!r} is {len(data)} bytes; "
                f"the limit is {self._max_value_size}"
            )
        return data

    def change(self, msg: Msg) -> Change[T]:
        """The change a message of the bucket's stream made (decoded; else CodecError)."""
        key = self._bucket.key_of(msg.subject)
        revision = int(msg.metadata.sequence.stream)
        op = op_of(msg.headers)
        value: T | None = None
        if op is Op.PUT:
            value = self.decode(key, Raw(revision, msg.data))
        return Change(key, value, revision, op)
