"""JSON for annotated Python types, validated both ways.

:func:`converter` turns a type annotation (``int``, ``datetime``, ``list[Point]``, a
dataclass, a pydantic model, ``Optional[...]``, ...) into a :class:`Converter` once, when a
store, task or flow is declared, so an annotation jsflow cannot carry fails then
(:class:`ConfigError`), not after the work ran. Encoding checks each value against its
annotation; decoding validates and rebuilds it. A mismatch is a :class:`CodecError` naming
the path to the field (``items[2].price: expected a decimal string, got True``).

JSON forms: ``datetime`` / ``date`` / ``time`` as ISO 8601, ``timedelta`` as seconds,
``UUID`` and ``Decimal`` as strings, ``bytes`` as base64, enums by value, sets and tuples as
arrays, dataclasses and pydantic models as objects (models through pydantic itself).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime as dt
import decimal
import enum
import functools
import json
import types
import typing
import uuid
from collections.abc import Callable
from typing import Any, get_args, get_origin

from jsflow.errors import CodecError, ConfigError

__all__ = ["Converter", "converter", "is_pydantic_model", "loads"]

_decode_json = json.JSONDecoder().decode


def loads(data: bytes | str) -> Any:
    """``json.loads(data)``, without its encoding detection for the usual UTF-8 bytes: a
    first byte that is ASCII and a second that is not NUL rule out a BOM, UTF-16 and UTF-32
    (what ``json.loads`` looks for), so the bytes are decoded as UTF-8 at once."""
    if type(data) is bytes and data and data[0] < 0x80 and (len(data) < 2 or data[1]):
        return _decode_json(data.decode())
    return json.loads(data)


Converter = tuple[Callable[[Any, str], Any], Callable[[Any, str], Any]]
"""``(to_json, from_json)``: each takes a value and the path shown in errors."""

try:  # optional: pydantic models are carried when pydantic is installed
    import pydantic

    _BaseModel: type | None = pydantic.BaseModel
except ImportError:  # pragma: no cover - pydantic is installed in the test environment
    pydantic = None  # type: ignore[assignment]
    _BaseModel = None


def is_pydantic_model(tp: object) -> bool:
    """Whether ``tp`` is a pydantic (v2) model class."""
    return _BaseModel is not None and isinstance(tp, type) and issubclass(tp, _BaseModel)


def _where(path: str) -> str:
    return f"{path}: " if path else ""


def _bad(path: str, expected: str, value: Any) -> CodecError:
    shown = repr(value)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return CodecError(f"{_where(path)}expected {expected}, got {shown}")


def _join(path: str, name: str | int) -> str:
    if isinstance(name, int):
        return f"{path}[{name}]"
    return f"{path}.{name}" if path else name


def _scalar(kind: type, expected: str) -> Converter:
    def check(value: Any, path: str) -> Any:
        if type(value) is kind:  # the common case, one test (what json.loads returns)
            return value
        # bool is an int subclass: never accept one for the other
        if isinstance(value, kind) and (kind is bool or not isinstance(value, bool)):
            return value
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        raise _bad(path, expected, value)

    return check, check


def _any() -> Converter:
    def passthrough(value: Any, path: str) -> Any:
        return value

    return passthrough, passthrough


def _none() -> Converter:
    def check(value: Any, path: str) -> Any:
        if value is not None:
            raise _bad(path, "null", value)
        return None

    return check, check


def _parsed(
    kind: type, expected: str, dump: Callable[[Any], Any], load: Callable[[Any], Any]
) -> Converter:
    def to_json(value: Any, path: str) -> Any:
        if not isinstance(value, kind) or (kind is dt.date and isinstance(value, dt.datetime)):
            raise _bad(path, expected, value)
        return dump(value)

    def from_json(value: Any, path: str) -> Any:
        try:
            return load(value)
        except (TypeError, ValueError, ArithmeticError, binascii.Error) as exc:
            raise _bad(path, expected, value) from exc

    return to_json, from_json


def _str_only(load: Callable[[str], Any]) -> Callable[[Any], Any]:
    def strict(value: Any) -> Any:
        if not isinstance(value, str):
            raise TypeError("not a string")
        return load(value)

    return strict


def _iso_datetime(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


def _iso_date(text: str) -> dt.date:
    return dt.date.fromisoformat(text)


def _seconds(value: Any) -> dt.timedelta:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError("not a number")
    return dt.timedelta(seconds=value)


_PARSED: dict[type, Converter] = {
    dt.datetime: _parsed(
        dt.datetime,
        "an ISO 8601 datetime",
        dt.datetime.isoformat,
        _str_only(dt.datetime.fromisoformat),
    ),
    dt.date: _parsed(
        dt.date, "an ISO 8601 date", dt.date.isoformat, _str_only(dt.date.fromisoformat)
    ),
    dt.time: _parsed(
        dt.time, "an ISO 8601 time", dt.time.isoformat, _str_only(dt.time.fromisoformat)
    ),
    dt.timedelta: _parsed(dt.timedelta, "seconds", dt.timedelta.total_seconds, _seconds),
    uuid.UUID: _parsed(uuid.UUID, "a UUID string", str, _str_only(uuid.UUID)),
    decimal.Decimal: _parsed(decimal.Decimal, "a decimal string", str, _str_only(decimal.Decimal)),
    bytes: _parsed(
        bytes,
        "base64 bytes",
        lambda b: base64.b64encode(b).decode("ascii"),
        _str_only(lambda s: base64.b64decode(s, validate=True)),
    ),
}


def _enum(tp: type[enum.Enum]) -> Converter:
    def to_json(value: Any, path: str) -> Any:
        if not isinstance(value, tp):
            raise _bad(path, tp.__name__, value)
        return value.value

    def from_json(value: Any, path: str) -> Any:
        try:
            return tp(value)
        except ValueError as exc:
            raise _bad(path, f"one of {[m.value for m in tp]}", value) from exc

    return to_json, from_json


def _literal(options: tuple[Any, ...]) -> Converter:
    def check(value: Any, path: str) -> Any:
        if not any(value == o and type(value) is type(o) for o in options):
            raise _bad(path, f"one of {list(options)}", value)
        return value

    return check, check


def _union(members: tuple[Any, ...]) -> Converter:
    convs = [converter(m) for m in members]

    def attempt(index: int) -> Callable[[Any, str], Any]:
        def run(value: Any, path: str) -> Any:
            errors = []
            for conv in convs:
                try:
                    return conv[index](value, path)
                except CodecError as exc:
                    errors.append(str(exc))
            raise CodecError(f"{_where(path)}matches none of its types ({'; '.join(errors)})")

        return run

    return attempt(0), attempt(1)


def _sequence(origin: type, args: tuple[Any, ...]) -> Converter:
    fixed = origin is tuple and args and args[-1] is not Ellipsis and args != ((),)
    items = [converter(a) for a in args] if fixed else [converter(args[0] if args else Any)]
    name = origin.__name__

    def to_json(value: Any, path: str) -> Any:
        if not isinstance(value, list | tuple | set | frozenset) or not isinstance(value, origin):
            raise _bad(path, f"a {name}", value)
        if fixed:
            if len(value) != len(items):
                raise _bad(path, f"a {name} of {len(items)} items", value)
            return [
                c[0](v, _join(path, i)) for i, (c, v) in enumerate(zip(items, value, strict=True))
            ]
        return [items[0][0](v, _join(path, i)) for i, v in enumerate(value)]

    def from_json(value: Any, path: str) -> Any:
        if not isinstance(value, list):
            raise _bad(path, "an array", value)
        if fixed:
            if len(value) != len(items):
                raise _bad(path, f"an array of {len(items)} items", value)
            out = [
                c[1](v, _join(path, i)) for i, (c, v) in enumerate(zip(items, value, strict=True))
            ]
        else:
            out = [items[0][1](v, _join(path, i)) for i, v in enumerate(value)]
        return out if origin is list else origin(out)

    return to_json, from_json


def _mapping(args: tuple[Any, ...]) -> Converter:
    key_tp = args[0] if args else str
    if key_tp not in (str, Any) and not (
        isinstance(key_tp, type) and issubclass(key_tp, enum.Enum)
    ):
        raise ConfigError(f"dict keys must be str or a str enum for JSON, got {key_tp!r}")
    keys = converter(key_tp)
    values = converter(args[1] if len(args) == 2 else Any)

    def to_json(value: Any, path: str) -> Any:
        if not isinstance(value, dict):
            raise _bad(path, "a dict", value)
        return {keys[0](k, path): values[0](v, _join(path, str(k))) for k, v in value.items()}

    def from_json(value: Any, path: str) -> Any:
        if not isinstance(value, dict):
            raise _bad(path, "an object", value)
        return {keys[1](k, path): values[1](v, _join(path, str(k))) for k, v in value.items()}

    return to_json, from_json


@functools.cache
def _hints(tp: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(tp)
    except Exception as exc:
        raise ConfigError(f"cannot resolve the annotations of {tp.__name__}: {exc}") from exc


def _dataclass(tp: type) -> Converter:
    fields = [f for f in dataclasses.fields(tp)]
    hints = _hints(tp)
    convs = {f.name: converter(hints.get(f.name, Any)) for f in fields}
    required = frozenset(
        f.name
        for f in fields
        if f.init and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    )
    # Per init field: its name and decoder, resolved once (decoding runs per message).
    loaders = [(f.name, convs[f.name][1]) for f in fields if f.init]

    def to_json(value: Any, path: str) -> Any:
        if not isinstance(value, tp):
            raise _bad(path, tp.__name__, value)
        return {
            f.name: convs[f.name][0](getattr(value, f.name), _join(path, f.name)) for f in fields
        }

    def from_json(value: Any, path: str) -> Any:
        if not isinstance(value, dict):
            raise _bad(path, f"an object for {tp.__name__}", value)
        if not required.issubset(value):
            missing = sorted(required - set(value))
            raise CodecError(f"{_where(path)}{tp.__name__} lacks field(s) {missing}")
        kwargs = {}
        for name, load in loaders:
            if name in value:
                kwargs[name] = load(value[name], f"{path}.{name}" if path else name)
        try:
            return tp(**kwargs)
        except Exception as exc:  # a __post_init__ that validates
            raise CodecError(f"{_where(path)}{tp.__name__}: {exc}") from exc

    return to_json, from_json


def _model(tp: type) -> Converter:
    assert pydantic is not None

    def to_json(value: Any, path: str) -> Any:
        if not isinstance(value, tp):
            raise _bad(path, tp.__name__, value)
        return value.model_dump(mode="json")  # type: ignore[attr-defined]

    def from_json(value: Any, path: str) -> Any:
        try:
            return tp.model_validate(value)  # type: ignore[attr-defined]
        except pydantic.ValidationError as exc:
            raise model_error(tp, exc, path) from None

    return to_json, from_json


def model_error(tp: type, exc: Any, path: str = "") -> CodecError:
    """A pydantic ``ValidationError`` as a :class:`CodecError` naming the first bad field."""
    first = exc.errors()[0] if exc.errors() else {}
    loc = path
    for part in first.get("loc", ()):
        loc = _join(loc, part)
    return CodecError(f"{_where(loc)}{first.get('msg', exc)} (in {tp.__name__})")


@functools.cache
def _cached(tp: Any) -> Converter:
    return _build(tp)


def converter(tp: Any) -> Converter:
    """The converter of annotation ``tp``; :class:`ConfigError` when JSON cannot carry it."""
    try:
        return _cached(tp)
    except TypeError:  # an unhashable annotation (rare): build it uncached
        return _build(tp)


def _build(tp: Any) -> Converter:
    if tp is Any or tp is object:
        return _any()
    if tp is None or tp is type(None):
        return _none()
    if tp is bool:
        return _scalar(bool, "a boolean")
    if tp is int:
        return _scalar(int, "an integer")
    if tp is float:
        return _scalar(float, "a number")
    if tp is str:
        return _scalar(str, "a string")
    if tp in _PARSED:
        return _PARSED[tp]
    origin = get_origin(tp)
    args = get_args(tp)
    if origin is typing.Union or origin is types.UnionType:
        return _union(args)
    if origin is typing.Literal:
        return _literal(args)
    if origin is typing.Annotated:
        return converter(args[0])
    if origin in (list, tuple, set, frozenset):
        return _sequence(origin, args)
    if origin is dict:
        return _mapping(args)
    if tp in (list, tuple, set, frozenset):
        return _sequence(tp, ())
    if tp is dict:
        return _mapping(())
    if isinstance(tp, type):
        if issubclass(tp, enum.Enum):
            return _enum(tp)
        if dataclasses.is_dataclass(tp):
            return _dataclass(tp)
        if is_pydantic_model(tp):
            return _model(tp)
    raise ConfigError(
        f"no JSON form for {tp!r}: use str, int, float, bool, None, datetime, date, time, "
        "timedelta, UUID, Decimal, bytes, an enum, a dataclass, a pydantic model, or "
        "list / tuple / set / dict / Optional / Union / Literal of them"
    )
