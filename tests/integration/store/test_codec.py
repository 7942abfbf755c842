"""Codecs: every supported state type round-trips through a real bucket; bad data is typed."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import betterproto
import pytest

import jsflow
from jsflow._proto.common_pb2 import Lease
from jsflow.codec import codec_for
from tests.support.names import second_client


@dataclass(eq=False, repr=False)
class Point(betterproto.Message):
    """A small betterproto 2 message."""

    x: int = betterproto.int32_field(1)
    label: str = betterproto.string_field(2)
    tags: list[str] = betterproto.string_field(3)  # noqa: RUF009


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


@dataclass
class Inner:
    n: int = 0
    ratio: float = 0.0


@dataclass
class Outer:
    name: str = ""
    inner: Inner = field(default_factory=Inner)
    items: list[Inner] = field(default_factory=list)
    scores: dict[str, int] = field(default_factory=dict)
    maybe: Inner | None = None
    color: Color = Color.RED
    note: str | None = None


class Celsius:
    """A plain class with no built-in codec."""

    def __init__(self, degrees: float = 0.0) -> None:
        self.degrees = degrees


class CelsiusCodec:
    """A user codec: text with a unit suffix."""

    def encode(self, value: Celsius) -> bytes:
        if not isinstance(value, Celsius):
            raise jsflow.CodecError(f"expected Celsius, got {type(value).__name__}")
        return f"{value.degrees}C".encode()

    def decode(self, data: bytes) -> Celsius:
        text = data.decode()
        if not text.endswith("C"):
            raise ValueError("missing unit")
        return Celsius(float(text[:-1]))

    def new(self) -> Celsius:
        return Celsius()


async def test_protobuf_message_round_trips(
    jsflow_client: jsflow.Client, jsflow_bucket: str
) -> None:
    # given a store of a generated protobuf message
    store = await jsflow_client.object_store(jsflow_bucket, Lease)
    # when a lease is written and an update mutates it in place
    await store.put("l", Lease(owner="me", fencing_token=7, ttl_seconds=1.5))

    def bump(lease: Lease) -> None:
        lease.fencing_token += 1

    await store.update("l", bump)
    # then it reads back equal
    got = await store.get("l")
    assert got is not None
    assert got.value == Lease(owner="me", fencing_token=8, ttl_seconds=1.5)
    assert isinstance(store.codec, jsflow.ProtobufCodec)


async def test_betterproto_message_round_trips(
    jsflow_client: jsflow.Client, jsflow_bucket: str
) -> None:
    store = await jsflow_client.object_store(jsflow_bucket, Point)
    assert isinstance(store.codec, jsflow.BetterprotoCodec)
    await store.put("p", Point(x=3, label="three", tags=["a", "b"]))
    entry = await store.update("p", lambda p: Point(x=p.x + 1, label=p.label, tags=p.tags))
    got = await store.get("p")
    assert got is not None
    assert got.value == Point(x=4, label="three", tags=["a", "b"]) == entry.value


async def test_absent_betterproto_key_starts_empty(
    jsflow_client: jsflow.Client, jsflow_bucket: str
) -> None:
    store = await jsflow_client.object_store(jsflow_bucket, Point)
    entry = await store.update("q", lambda p: Point(x=p.x + 1))
    assert entry.value == Point(x=1)


async def test_nested_dataclass_round_trips(
    jsflow_client: jsflow.Client, jsflow_bucket: str
) -> None:
    # given a dataclass with a nested dataclass, list, dict, optional and enum
    store = await jsflow_client.object_store(jsflow_bucket, Outer)
    value = Outer(
        name="ünï",
        inner=Inner(1, 0.5),
        items=[Inner(2, 2.0), Inner(3)],
        scores={"a": 1, "b.c": 2},
        maybe=Inner(4, 4.25),
        color=Color.BLUE,
        note=None,
    )
    # when written and read back
    await store.put("o", value)
    got = await store.get("o")
    # then every field has its declared type again
    assert got is not None and got.value == value
    assert isinstance(got.value.items[0], Inner)
    assert isinstance(got.value.maybe, Inner)
    assert got.value.color is Color.BLUE
    assert isinstance(got.value.items[1].ratio, float)


async def test_dataclass_update_starts_from_defaults(
    jsflow_client: jsflow.Client, jsflow_bucket: str
) -> None:
    store = await jsflow_client.object_store(jsflow_bucket, Outer)

    def add(o: Outer) -> None:
        o.items.append(Inner(len(o.items)))
        o.scores["n"] = len(o.items)

    await store.update("o", add)
    entry = await store.update("o", add)
    assert entry.value.scores == {"n": 2}
    assert [i.n for i in entry.value.items] == [0, 1]


@pytest.mark.parametrize(
    ("tp", "value", "empty"),
    [
        (bytes, b"\x00\xffraw", b""),
        (str, "ünïcode ✓", ""),
        (dict, {"a": [1, 2, {"b": None}], "c": "d"}, {}),
        (list, [1, "two", 3.0], []),
        (int, 42, 0),
        (float, 1.25, 0.0),
    ],
)
async def test_plain_types_round_trip(
    jsflow_client: jsflow.Client, jsflow_bucket: str, tp: type, value: object, empty: object
) -> None:
    store = await jsflow_client.object_store(jsflow_bucket, tp)
    await store.put("k", value)
    got = await store.get("k")
    assert got is not None and got.value == value
    assert store.codec.new() == empty


async def test_custom_codec_is_used(jsflow_client: jsflow.Client, jsflow_bucket: str) -> None:
    # given a type jsflow has no codec for, with codec= given
    store = await jsflow_client.object_store(jsflow_bucket, Celsius, codec=CelsiusCodec())
    # when updated from absent
    await store.update("t", lambda c: Celsius(c.degrees + 21.5))
    # then the custom encoding is what the server stores
    raw = await jsflow_client.js.get_msg(f"KV_{jsflow_bucket}", subject=f"$KV.{jsflow_bucket}.t")
    assert raw.data == b"21.5C"
    got = await store.get("t")
    assert got is not None and got.value.degrees == 21.5


async def test_unsupported_type_raises_config_error(
    jsflow_client: jsflow.Client, jsflow_bucket: str
) -> None:
    with pytest.raises(jsflow.ConfigError):
        await jsflow_client.object_store(jsflow_bucket, Celsius)
    with pytest.raises(jsflow.ConfigError):
        codec_for(complex)  # no JSON form (a set is an array now)
    with pytest.raises(jsflow.ConfigError):
        codec_for(int, codec=object())  # type: ignore[arg-type]
    # nothing was created on the server
    names = [s.config.name for s in await jsflow_client.js.streams_info()]
    assert f"KV_{jsflow_bucket}" not in names


@pytest.mark.parametrize(
    ("tp", "wrong"),
    [
        (Lease, Point(x=1)),
        (Point, Lease()),
        (Outer, Inner()),
        (bytes, "s"),
        (str, b"b"),
        (int, "1"),
        (dict, [1]),
        (list, {"a": 1}),
    ],
)
async def test_wrong_value_type_on_put_raises_codec_error(
    jsflow_client: jsflow.Client, jsflow_bucket: str, tp: type, wrong: object
) -> None:
    store = await jsflow_client.object_store(jsflow_bucket, tp)
    with pytest.raises(jsflow.CodecError) as info:
        await store.put("k", wrong)
    assert info.value.bucket == jsflow_bucket and info.value.key == "k"
    assert await store.get("k") is None


async def test_update_returning_wrong_type_raises_codec_error(
    jsflow_client: jsflow.Client, jsflow_bucket: str
) -> None:
    store = await jsflow_client.object_store(jsflow_bucket, Outer)
    with pytest.raises(jsflow.CodecError):
        await store.update("k", lambda o: "not an Outer")  # type: ignore[arg-type,return-value]
    assert await store.get("k") is None


@pytest.mark.parametrize(
    ("tp", "garbage"),
    [(Outer, b"\xff{not json"), (int, b"[1,"), (Outer, b"[1, 2]"), (str, b"\xff\xfe")],
)
async def test_undecodable_bytes_raise_codec_error_naming_where(
    jsflow_client: jsflow.Client, jsflow_bucket: str, tp: type, garbage: bytes
) -> None:
    # given garbage written to the key's subject by a raw nats-py publish
    store = await jsflow_client.object_store(jsflow_bucket, tp)
    ack = await jsflow_client.js.publish(f"$KV.{jsflow_bucket}.bad", garbage)
    # when read / updated
    with pytest.raises(jsflow.CodecError) as info:
        await store.get("bad")
    # then the error names bucket, key and revision
    err = info.value
    assert (err.bucket, err.key, err.revision) == (jsflow_bucket, "bad", ack.seq)
    assert jsflow_bucket in str(err) and "bad" in str(err) and str(ack.seq) in str(err)
    with pytest.raises(jsflow.CodecError):
        await store.update("bad", lambda v: v)


async def test_oversize_payload_raises_before_io(
    jsflow_client: jsflow.Client, jsflow_bucket: str
) -> None:
    # given a store with max_value_size=100 whose connection is then closed
    client = await second_client(jsflow_client)
    store = await client.object_store(jsflow_bucket, bytes, max_value_size=100)
    await store.put("ok", b"x" * 100)
    await client.nc.close()
    # when a larger value is written / then PayloadTooLargeError, not a connection error
    with pytest.raises(jsflow.PayloadTooLargeError):
        await store.put("big", b"x" * 101)
    with pytest.raises(jsflow.PayloadTooLargeError):
        await store.create("big", b"x" * 101)
    with pytest.raises(jsflow.PayloadTooLargeError):
        await store.compare_and_set("big", b"x" * 101, 0)


async def test_payload_over_server_max_raises_payload_too_large(
    jsflow_client: jsflow.Client, jsflow_bucket: str
) -> None:
    store = await jsflow_client.object_store(jsflow_bucket, bytes)
    too_big = b"x" * (jsflow_client.nc.max_payload + 1)
    with pytest.raises(jsflow.PayloadTooLargeError):
        await store.put("big", too_big)
