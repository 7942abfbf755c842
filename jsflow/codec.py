"""How values become bytes and back.

A :class:`Codec` encodes, decodes, and makes the empty value of its type. :func:`codec_for`
infers one from a type or annotation: protobuf messages (``google.protobuf``), betterproto
messages, pydantic models, dataclasses (JSON, with datetime / UUID / Decimal / enum /
nested fields), ``bytes``, ``str``, plain JSON types and annotations such as
``list[Point]`` or ``datetime``. Decoding validates. Nothing is ever pickled.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar, get_origin, runtime_checkable

from google.protobuf.message import Message as ProtobufMessage

try:  # optional (the jsflow[betterproto] extra): a pinned beta with dependencies of its own
    import betterproto
except ImportError:  # pragma: no cover - installed in the test environment
    betterproto = None  # type: ignore[assignment]

from jsflow._jsontypes import converter, is_pydantic_model, loads, model_error
from jsflow.errors import CodecError, ConfigError

__all__ = [
    "BetterprotoCodec",
    "BytesCodec",
    "Codec",
    "DataclassCodec",
    "JsonCodec",
    "ProtobufCodec",
    "PydanticCodec",
    "StrCodec",
    "TypedJsonCodec",
    "codec_for",
    "encode_value",
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
        value = loads(data)
        if not self._accepts(value):
            assert self._type is not None
            raise ValueError(f"expected {self._type.__name__}, got {type(value).__name__}")
        if self._type is float:
            value = float(value)
        return value  # type: ignore[no-any-return]

    def new(self) -> T:
        """The empty value (see :meth:`Codec.new`)."""
        return self._factory()


class TypedJsonCodec(Generic[T]):
    """JSON for any annotation jsflow can carry (see :mod:`jsflow._jsontypes`): a dataclass,
    ``list[Point]``, ``datetime``, ``dict[str, Decimal]``, ... Encoding checks the value
    against the annotation and decoding validates it: a mismatch is a :class:`CodecError`
    naming the field. An annotation JSON cannot carry is a :class:`ConfigError` here."""

    def __init__(self, tp: Any) -> None:
        self.tp = tp
        self._to_json, self._from_json = converter(tp)
        self._name = getattr(tp, "__name__", repr(tp))

    def encode(self, value: T) -> bytes:
        """Serialize ``value`` (see :meth:`Codec.encode`)."""
        raw = self._to_json(value, "")
        try:
            return json.dumps(raw, separators=(",", ":"), ensure_ascii=False).encode()
        except (TypeError, ValueError) as exc:
            raise CodecError(f"{self._name} is not JSON-serializable: {exc}") from exc

    def decode(self, data: bytes) -> T:
        """Deserialize and validate ``data`` (see :meth:`Codec.decode`)."""
        try:
            raw = loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise CodecError(f"not JSON for {self._name}: {exc}") from exc
        return self._from_json(raw, "")  # type: ignore[no-any-return]

    def new(self) -> T:
        """The empty value: the type called with no arguments (see :meth:`Codec.new`)."""
        factory = get_origin(self.tp) or self.tp
        try:
            return factory()  # type: ignore[no-any-return]
        except TypeError as exc:
            raise ConfigError(
                f"{self._name}() needs arguments; give every field a default so an "
                "absent key can start from an empty value"
            ) from exc


class DataclassCodec(TypedJsonCodec[T]):
    """JSON for dataclasses: nested dataclasses, datetimes, UUIDs, decimals, enums, lists,
    dicts and optionals included; decoding validates every field."""

    def __init__(self, cls: type[T]) -> None:
        if not dataclasses.is_dataclass(cls):
            raise ConfigError(f"{cls!r} is not a dataclass")
        super().__init__(cls)
        self.cls = cls


class PydanticCodec(Generic[T]):
    """JSON for pydantic (v2) models, validated by pydantic; a validation failure is a
    :class:`CodecError` naming the field."""

    def __init__(self, cls: type[T]) -> None:
        if not is_pydantic_model(cls):
            raise ConfigError(f"{cls!r} is not a pydantic model")
        self.cls = cls

    def encode(self, value: T) -> bytes:
        """Serialize ``value`` (see :meth:`Codec.encode`)."""
        if not isinstance(value, self.cls):
            raise CodecError(f"expected {self.cls.__name__}, got {type(value).__name__}")
        return bytes(value.model_dump_json().encode())  # type: ignore[attr-defined]

    def decode(self, data: bytes) -> T:
        """Deserialize and validate ``data`` (see :meth:`Codec.decode`)."""
        try:
            return self.cls.model_validate_json(data)  # type: ignore[attr-defined,no-any-return]
        except Exception as exc:
            if hasattr(exc, "errors"):
                raise model_error(self.cls, exc) from None
            raise CodecError(f"cannot decode {self.cls.__name__}: {exc}") from exc

    def new(self) -> T:
        """The model with its defaults (see :meth:`Codec.new`)."""
        try:
            return self.cls()
        except Exception as exc:
            raise ConfigError(
                f"{self.cls.__name__}() needs arguments; give every field a default so an "
                "absent key can start from an empty value"
            ) from exc


def _is_protobuf(tp: type) -> bool:
    return issubclass(tp, ProtobufMessage)


def _is_betterproto(tp: type) -> bool:
    return betterproto is not None and issubclass(tp, betterproto.Message)


def codec_for(tp: type[T], codec: Codec[T] | None = None) -> Codec[T]:
    """Return ``codec`` if given, else the codec inferred from ``tp``.

    Raises :class:`ConfigError` for a type jsflow has no codec for (pass ``codec=``).
    """
    if codec is not None:
        if not isinstance(codec, Codec):
            raise ConfigError(f"codec {codec!r} lacks encode/decode/new")
        return codec
    if not isinstance(tp, type):  # an annotation: list[Point], dict[str, int], Optional[X]
        return TypedJsonCodec(tp)
    if _is_protobuf(tp):
        return ProtobufCodec(tp)
    if _is_betterproto(tp):
        return BetterprotoCodec(tp)
    if is_pydantic_model(tp):
        return PydanticCodec(tp)
    if dataclasses.is_dataclass(tp):
        return DataclassCodec(tp)
    if tp is bytes:
        return BytesCodec()  # type: ignore[return-value]
    if tp is str:
        return StrCodec()  # type: ignore[return-value]
    if tp in (dict, list, int, float, bool):
        return JsonCodec(tp)
    try:
        return TypedJsonCodec(tp)  # datetime, UUID, Decimal, an enum, ...
    except ConfigError:
        raise ConfigError(
            f"no codec for {tp.__name__}: use a protobuf or betterproto message, a pydantic "
            "model, a dataclass, bytes, str, a JSON type, or pass codec="
        ) from None


def encode_value(value: Any, codec: Codec[Any] | None) -> bytes:
    """Bytes of ``value``: with ``codec`` when given, else the codec inferred from its type."""
    if codec is not None:
        return codec.encode(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    try:
        return codec_for(type(value)).encode(value)
    except ConfigError as exc:
        raise CodecError(f"cannot encode {type(value).__name__} output: {exc}") from exc
