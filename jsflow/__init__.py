"""jsflow: NATS JetStream as the one backbone for state, coordination and work.

The public API is flat: everything users need is importable from ``jsflow``.
"""

from __future__ import annotations

from jsflow.client import Client, connect
from jsflow.codec import (
    BetterprotoCodec,
    BytesCodec,
    Codec,
    DataclassCodec,
    JsonCodec,
    ProtobufCodec,
    StrCodec,
    codec_for,
)
from jsflow.errors import (
    BucketError,
    CodecError,
    ConfigError,
    ConflictError,
    ConnectionFailedError,
    InvalidKeyError,
    JsflowError,
    KeyExistsError,
    LockLostError,
    NotHeldError,
    PayloadTooLargeError,
    RateLimitExceeded,
    RequestTimeoutError,
    ServerError,
    ServerNotFoundError,
    TaskCancelledError,
    TaskError,
    TaskFailedError,
)
from jsflow.keys import key, key_parts, validate_key
from jsflow.server import EmbeddedServer, LocalCluster, ServerStartError
from jsflow.store import Change, Entry, KeyListener, ObjectStore, Op, RetryPolicy, Watch

__version__ = "0.1.0"

__all__ = [
    "BetterprotoCodec",
    "BucketError",
    "BytesCodec",
    "Change",
    "Client",
    "Codec",
    "CodecError",
    "ConfigError",
    "ConflictError",
    "ConnectionFailedError",
    "DataclassCodec",
    "EmbeddedServer",
    "Entry",
    "InvalidKeyError",
    "JsflowError",
    "JsonCodec",
    "KeyExistsError",
    "KeyListener",
    "LocalCluster",
    "LockLostError",
    "NotHeldError",
    "ObjectStore",
    "Op",
    "PayloadTooLargeError",
    "ProtobufCodec",
    "RateLimitExceeded",
    "RequestTimeoutError",
    "RetryPolicy",
    "ServerError",
    "ServerNotFoundError",
    "ServerStartError",
    "StrCodec",
    "TaskCancelledError",
    "TaskError",
    "TaskFailedError",
    "Watch",
    "__version__",
    "codec_for",
    "connect",
    "key",
    "key_parts",
    "validate_key",
]
