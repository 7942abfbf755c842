"""How values become bytes and back.

A :class:`Codec` encodes, decodes, and makes the empty value of its type. :func:`codec_for`
infers one from a type: protobuf messages (``google.protobuf``), betterproto messages,
dataclasses (JSON), ``bytes``, ``str`` and plain JSON types. Nothing is ever pickled.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import json
import types
import typing
from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar, get_args, get_origin, runtime_checkable

import betterproto
from google.protobuf.message import Message as ProtobufMessage

from jsflow.errors import CodecError, ConfigError

__all__ = [
    "BetterprotoCodec",
    "BytesCodec",
    "Codec",
    "DataclassCodec",
    "JsonCodec",
    "ProtobufCodec",
    "StrCodec",
    "codec_for",
]

T = TypeVar("T")
_JSON_TYPES: tuple[type, ...] = (dict, list, int, float, bool)


@runtime_checkable
class Codec(Protocol[T]):
    """Turns values of one type into bytes and back."""

    def encode(self, value: T) -> bytes:
        """Serialize ``value``; raise :class:`CodecError` when it is not of the codec's type."""
        ...

    def decode(self, data: bytes) -> T:
        """Deserialize ``data``; raise any exception on malformed input."""
        ...

    def new(self) -> T:
        """The empty value (``T()``), used when a key is absent."""
        ...


class ProtobufCodec(Generic[T]):
    """Binary protobuf for ``google.protobuf`` message classes."""

    def __init__(self, cls: type[T]) -> None:
        self.cls = cls

    def encode(self, value: T) -> bytes:
        """Serialize ``value`` (see :meth:`Codec.encode`)."""
        if not isinstance(value, self.cls):
            raise CodecError(f"expected {self.cls.__name__}, got {type(value).__name__}")
        return bytes(value.SerializeToString())  # type: ignore[attr-defined]

    def decode(self, data: bytes) -> T:
        """Deserialize ``data`` (see :meth:`Codec.decode`)."""
        msg = self.cls()
        msg.ParseFromString(data)  # type: ignore[attr-defined]
        return msg

    def new(self) -> T:
        """The empty value (see :meth:`Codec.new`)."""
        return self.cls()


class BetterprotoCodec(Generic[T]):
    """Binary protobuf for ``betterproto`` message classes."""

    def __init__(self, cls: type[T]) -> None:
        self.cls = cls

    def encode(self, value: T) -> bytes:
        """Serialize ``value`` (see :meth:`Codec.encode`)."""
        if not isinstance(value, self.cls):
            raise CodecError(f"expected {self.cls.__name__}, got {type(value).__name__}")
        return bytes(value)  # type: ignore[call-overload, no-any-return]

    def decode(self, data: bytes) -> T:
        """Deserialize ``data`` (see :meth:`Codec.decode`)."""
        return self.cls().parse(data)  # type: ignore[attr-defined, no-any-return]

    def new(self) -> T:
        """The empty value (see :meth:`Codec.new`)."""
        return self.cls()


class BytesCodec:
    """Bytes as they are."""

    def encode(self, value: bytes) -> bytes:
        """Serialize ``value`` (see :meth:`Codec.encode`)."""
        if not isinstance(value, bytes | bytearray | memoryview):
            raise CodecError(f"expected bytes, got {type(value).__name__}")
        return bytes(value)

    def decode(self, data: bytes) -> bytes:
        """Deserialize ``data`` (see :meth:`Codec.decode`)."""
        return bytes(data)

    def new(self) -> bytes:
        """The empty value (see :meth:`Codec.new`)."""
        return b""


class StrCodec:
    """UTF-8 text."""

    def encode(self, value: str) -> bytes:
        """Serialize ``value`` (see :meth:`Codec.encode`)."""
        if not isinstance(value, str):
            raise CodecError(f"expected str, got {type(value).__name__}")
        return value.encode("utf-8")

    def decode(self, data: bytes) -> str:
        """Deserialize ``data`` (see :meth:`Codec.decode`)."""
        return data.decode("utf-8")

    def new(self) -> str:
        """The empty value (see :meth:`Codec.new`)."""
        return ""


class JsonCodec(Generic[T]):
    """Compact JSON for plain JSON types (``dict``, ``list``, ``int``, ``float``, ``bool``)."""

    def __init__(self, factory: Callable[[], T] = dict) -> None:  # type: ignore[assignment]
        self._factory = factory
        # When the factory is one of the JSON types, values are checked against it.
        self._type: type | None = factory if factory in _JSON_TYPES else None

    def _accepts(self, value: object) -> bool:
        tp = self._type
        if tp is None:
            return True
        if tp in (int, float) and isinstance(value, bool):
            return False
        if tp is float:
            return isinstance(value, int | float)
        return isinstance(value, tp)

    def encode(self, value: T) -> bytes:
        """Serialize ``value`` (see :meth:`Codec.encode`)."""
        if not self._accepts(value):
            assert self._type is not None
            raise CodecError(f"expected {self._type.__name__}, got {type(value).__name__}")
        try:
            return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
        except (TypeError, ValueError) as exc:
            raise CodecError(f"value is not JSON-serializable: {exc}") from exc

    def decode(self, data: bytes) -> T:
        """Deserialize ``data`` (see :meth:`Codec.decode`)."""
        value = json.loads(data)
        if not self._accepts(value):
            assert self._type is not None
            raise ValueError(f"expected {self._type.__name__}, got {type(value).__name__}")
        if self._type is float:
            value = float(value)
        return value  # type: ignore[no-any-return]

    def new(self) -> T:
        """The empty value (see :meth:`Codec.new`)."""
        return self._factory()


def _to_json(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _to_json(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return _to_json(value.value)
    if isinstance(value, dict):
        return {str(k): _to_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_to_json(v) for v in value]
    if isinstance(value, bytes):
        raise CodecError("bytes fields are not JSON-serializable; use str or a protobuf type")
    return value


@functools.cache
def _type_hints(tp: type) -> dict[str, Any]:
    # get_type_hints re-evaluates string annotations on every call: cache per class.
    return typing.get_type_hints(tp)


def _from_json(tp: Any, value: Any) -> Any:
    if value is None:
        return None
    origin = get_origin(tp)
    if origin is typing.Union or origin is types.UnionType:
        options = [a for a in get_args(tp) if a is not type(None)]
        return _from_json(options[0], value) if len(options) == 1 else value
    if origin in (list, set, frozenset, tuple):
        args = get_args(tp)
        inner = args[0] if args else Any
        items = [_from_json(inner, v) for v in value]
        return origin(items) if origin is not list else items
    if origin is dict:
        args = get_args(tp)
        inner = args[1] if len(args) == 2 else Any
        return {k: _from_json(inner, v) for k, v in value.items()}
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        hints = _type_hints(tp)
        kwargs = {
            f.name: _from_json(hints.get(f.name, Any), value[f.name])
            for f in dataclasses.fields(tp)
            if f.name in value and f.init
        }
        return tp(**kwargs)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return tp(value)
    if tp is float and isinstance(value, int):
        return float(value)
    return value


class DataclassCodec(Generic[T]):
    """JSON for dataclasses, nested dataclasses, lists, dicts, enums and optionals included."""

    def __init__(self, cls: type[T]) -> None:
        if not dataclasses.is_dataclass(cls):
            raise ConfigError(f"{cls!r} is not a dataclass")
        self.cls = cls

    def encode(self, value: T) -> bytes:
        """Serialize ``value`` (see :meth:`Codec.encode`)."""
        if not isinstance(value, self.cls):
            raise CodecError(f"expected {self.cls.__name__}, got {type(value).__name__}")
        try:
            return json.dumps(_to_json(value), separators=(",", ":"), ensure_ascii=False).encode()
        except (TypeError, ValueError) as exc:
            raise CodecError(f"{self.cls.__name__} is not JSON-serializable: {exc}") from exc

    def decode(self, data: bytes) -> T:
        """Deserialize ``data`` (see :meth:`Codec.decode`)."""
        raw = json.loads(data)
        if not isinstance(raw, dict):
            raise ValueError(f"expected a JSON object for {self.cls.__name__}")
        return _from_json(self.cls, raw)  # type: ignore[no-any-return]

    def new(self) -> T:
        """The empty value (see :meth:`Codec.new`)."""
        try:
            return self.cls()
        except TypeError as exc:
            raise ConfigError(
                f"{self.cls.__name__}() needs arguments; give every field a default so an "
                "absent key can start from an empty value"
            ) from exc


def _is_protobuf(tp: type) -> bool:
    return issubclass(tp, ProtobufMessage)


def _is_betterproto(tp: type) -> bool:
    return issubclass(tp, betterproto.Message)


def codec_for(tp: type[T], codec: Codec[T] | None = None) -> Codec[T]:
    """Return ``codec`` if given, else the codec inferred from ``tp``.

    Raises :class:`ConfigError` for a type jsflow has no codec for (pass ``codec=``).
    """
    if codec is not None:
        if not isinstance(codec, Codec):
            raise ConfigError(f"codec {codec!r} lacks encode/decode/new")
        return codec
    if not isinstance(tp, type):
        raise ConfigError(f"state type must be a class, got {tp!r}")
    if _is_protobuf(tp):
        return ProtobufCodec(tp)
    if _is_betterproto(tp):
        return BetterprotoCodec(tp)
    if dataclasses.is_dataclass(tp):
        return DataclassCodec(tp)
    if tp is bytes:
        return BytesCodec()  # type: ignore[return-value]
    if tp is str:
        return StrCodec()  # type: ignore[return-value]
    if tp in (dict, list, int, float, bool):
        return JsonCodec(tp)
    raise ConfigError(
        f"no codec for {tp.__name__}: use a protobuf or betterproto message, a dataclass, "
        "bytes, str, a JSON type, or pass codec="
    )
