"""Flow options: a bad source, stream, durable, dead letter, batch, sink or flow option is a
ConfigError raised when the object is made, before any I/O (flows without a client; no
server)."""

from __future__ import annotations

import pytest

import jsflow
from jsflow.errors import ConfigError
from jsflow.flow.operators import Batch
from jsflow.flow.pipeline import FlowHandler
from jsflow.flow.sink import StreamSink
from jsflow.flow.source import StreamSource
from tests.support.names import uniq
from tests.support.streams import flow_source


@pytest.mark.parametrize("subject", ["orders.dead", "orders.x.dead"], ids=["one-token", "deeper"])
async def test_a_dead_letter_the_source_reads_is_refused(subject):
    # given a source on orders.> and a dead letter inside it, then ConfigError before I/O
    source = StreamSource("ORDERS_LOOP", "orders.>", "d_loop", int)
    with pytest.raises(jsflow.ConfigError, match="dead_letter"):
        FlowHandler(None, source=source, dead_letter=subject)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", ["dl q", "dlq.*", "dlq.>", "", "a..b", 7])
async def test_an_illegal_dead_letter_subject_is_refused(bad):
    with pytest.raises(jsflow.ConfigError):
        FlowHandler(None, source=flow_source(uniq("cfg")), dead_letter=bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"batch": "5"}, "batch"),
        ({"batch": 0}, "batch"),
        ({"ack_wait": float("inf")}, "ack_wait"),
        ({"ack_wait": "30"}, "ack_wait"),
        ({"fetch_timeout": -1}, "fetch_timeout"),
        ({"max_ack_pending": 1.5}, "max_ack_pending"),
    ],
)
def test_bad_source_options_raise_config_error_naming_them(kwargs, param):
    with pytest.raises(jsflow.ConfigError, match=param):
        StreamSource("S", "s.x", "d", int, **kwargs)


@pytest.mark.parametrize(
    ("stream", "durable"), [("a.b", "d"), ("S", "d x"), ("S" * 200, "d"), ("S", "")]
)
def test_illegal_stream_and_durable_names_are_refused(stream, durable):
    with pytest.raises(jsflow.ConfigError):
        StreamSource(stream, "s.x", durable, int)


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"concurrency": "4"}, "concurrency"),
        ({"concurrency": 0}, "concurrency"),
        ({"max_deliver": "3"}, "max_deliver"),
        ({"max_deliver": True}, "max_deliver"),
        ({"backoff": [float("nan")]}, "backoff"),
        ({"backoff": [-1.0]}, "backoff"),
        ({"backoff": "1,2"}, "backoff"),
    ],
)
async def test_bad_flow_options_raise_config_error_naming_them(kwargs, param):
    with pytest.raises(jsflow.ConfigError, match=param):
        FlowHandler(None, source=flow_source(uniq("cfg")), **kwargs)  # type: ignore[arg-type]


def test_bad_options_raise_before_any_io():
    # given/when/then: invalid configuration is refused at construction
    with pytest.raises(ConfigError):
        StreamSource("bad name", "x", "d", int)
    with pytest.raises(ConfigError):
        Batch(size=0, window=1)
    with pytest.raises(ConfigError):
        StreamSink("wild.*")
    with pytest.raises(ConfigError):
        FlowHandler(None, source=StreamSource("S", "s", "d", int), concurrency=0)  # type: ignore[arg-type]
