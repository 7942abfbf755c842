"""How a task's arguments and result become bytes.

Each argument is encoded by the codec of its parameter's annotation (protobuf, betterproto,
pydantic model, dataclass, ``list[Point]``, ``datetime``, validated JSON for JSON types) and
plain JSON when it has none; the encoded arguments travel as a ``TaskArgs`` protobuf. The
result uses the codec of the return annotation the same way. Decoding validates.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import typing
from collections.abc import Callable
from typing import Any

from jsflow._jsontypes import loads
from jsflow._proto import task_pb2
from jsflow.codec import Codec, TypedJsonCodec, codec_for
from jsflow.errors import CodecError, ConfigError

__all__ = ["JSON_ANY", "CallCodec"]


class _AnyJson:
    """Compact JSON for any JSON-serializable value (no type check)."""

    def encode(self, value: Any) -> bytes:
        try:
            return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
        except (TypeError, ValueError) as exc:
            raise CodecError(f"value is not JSON-serializable: {exc}") from exc

    def decode(self, data: bytes) -> Any:
        return loads(data)

    def new(self) -> Any:
        return None


# Results of a task whose function is not known here decode as plain JSON.
JSON_ANY: Codec[Any] = _AnyJson()


def _codec_for_hint(hint: Any) -> Codec[Any]:
    """The codec of one parameter or return annotation: none (or ``Any``) is plain JSON,
    JSON types are validated JSON, ``bytes`` raw, anything else :func:`codec_for`'s (a
    protobuf, a pydantic model, a dataclass, ``list[Point]``, ``datetime``, ...). An
    annotation no codec can carry is a :class:`ConfigError` now, at decoration time."""
    if hint is None or hint is Any:
        return JSON_ANY
    if hint is bytes:
        return codec_for(bytes)
    if hint in (dict, list, int, float, bool, str):
        return TypedJsonCodec(hint)  # the JSON form these always had, now validated
    try:
        return codec_for(hint)
    except ConfigError as exc:
        raise ConfigError(f"task annotation {hint!r} has no codec: {exc}") from None


class CallCodec:
    """Encodes a call's ``(args, kwargs)`` and its result for one task function."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.signature = inspect.signature(fn)
        try:
            hints = typing.get_type_hints(fn)
        except Exception:  # unresolved forward references: fall back to JSON everywhere
            hints = {}
        self._positional: list[Codec[Any]] = []
        self._star: Codec[Any] | None = None
        self._by_name: dict[str, Codec[Any]] = {}
        for param in self.signature.parameters.values():
            codec = _codec_for_hint(hints.get(param.name))
            if param.kind in (param.POSITIONAL_ONLY, param.POSITIONAL_OR_KEYWORD):
                self._positional.append(codec)
            elif param.kind is param.VAR_POSITIONAL:
                self._star = codec
            if param.kind is not param.VAR_POSITIONAL:
                self._by_name[param.name] = codec
        ret = hints.get("return")
        self.result_codec: Codec[Any] = (
            JSON_ANY if ret is None or ret is type(None) else _codec_for_hint(ret)
        )

    def _positional_codec(self, index: int) -> Codec[Any]:
        if index < len(self._positional):
            return self._positional[index]
        return self._star or JSON_ANY

    def check(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """Raise :class:`ConfigError` when the arguments do not fit the signature."""
        try:
            self.signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise ConfigError(f"arguments do not match the task's signature: {exc}") from exc

    def encode_args(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bytes:
        """Check and encode a call; raises before any I/O."""
        self.check(args, kwargs)
        names = list(self.signature.parameters)
        msg = task_pb2.TaskArgs()
        for i, value in enumerate(args):
            where = names[i] if i < len(names) else f"*args[{i}]"
            msg.args.append(_encode(self._positional_codec(i), value, where))
        for name, value in kwargs.items():
            msg.kwargs[name] = _encode(self._by_name.get(name, JSON_ANY), value, name)
        return bytes(msg.SerializeToString())

    def decode_args(self, data: bytes) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """Decode what :meth:`encode_args` (or a router) produced."""
        msg = task_pb2.TaskArgs()
        try:
            msg.ParseFromString(data)
            args = tuple(self._positional_codec(i).decode(raw) for i, raw in enumerate(msg.args))
            kwargs = {
                name: self._by_name.get(name, JSON_ANY).decode(raw)
                for name, raw in msg.kwargs.items()
            }
        except Exception as exc:
            raise CodecError(f"cannot decode task arguments: {type(exc).__name__}: {exc}") from exc
        return args, kwargs

    def encode_result(self, value: Any) -> bytes:
        """Encode the return value."""
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return _encode(codec_for(type(value)), value)
        return _encode(self.result_codec, value)

    def decode_result(self, data: bytes) -> Any:
        """Decode a stored result."""
        try:
            return self.result_codec.decode(data)
        except Exception as exc:
            raise CodecError(f"cannot decode task result: {type(exc).__name__}: {exc}") from exc


def _encode(codec: Codec[Any], value: Any, where: str = "") -> bytes:
    """``value`` encoded by ``codec``; a failure names the argument ``where`` (if given)."""
    prefix = f"argument {where!r}: " if where else ""
    try:
        return codec.encode(value)
    except CodecError as exc:
        if not prefix:
            raise
        raise CodecError(f"{prefix}{exc}") from exc
    except Exception as exc:
        raise CodecError(f"{prefix}cannot encode {type(value).__name__}: {exc}") from exc


def raw_args(*encoded: bytes) -> bytes:
    """A ``TaskArgs`` payload from already-encoded positional arguments (used by the router)."""
    msg = task_pb2.TaskArgs()
    msg.args.extend(encoded)
    return bytes(msg.SerializeToString())
