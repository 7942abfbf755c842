"""The one boundary to nats-py: nothing outside this package imports ``nats``.

The guarded connection (every protocol line checked against the server's limits before it
is sent), the mapping of nats-py's errors into jsflow's tree, named server error codes and
header names, pull consumers, and the nats-py types other layers name in signatures.
"""

from __future__ import annotations

from nats import errors as nats_errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext, api
from nats.js import errors as js_errors
from nats.js import object_store as js_object_store

from jsflow._js import codes, headers, internals, streams, subscriptions
from jsflow._js.errors import check_pub_ack, map_nats_errors, raise_api_error
from jsflow._js.fastpath import send_request
from jsflow._js.guard import GuardedClient
from jsflow._js.pull import Puller

__all__ = [
    "GuardedClient",
    "JetStreamContext",
    "Msg",
    "NatsClient",
    "Puller",
    "api",
    "check_pub_ack",
    "codes",
    "headers",
    "internals",
    "js_errors",
    "js_object_store",
    "map_nats_errors",
    "nats_errors",
    "raise_api_error",
    "send_request",
    "streams",
    "subscriptions",
]
