from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class Lease(_message.Message):
    __slots__ = ("owner", "fencing_token", "ttl_seconds", "acquired_at")
    OWNER_FIELD_NUMBER: _ClassVar[int]
    FENCING_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    ACQUIRED_AT_FIELD_NUMBER: _ClassVar[int]
    owner: str
    fencing_token: int
    ttl_seconds: float
    acquired_at: float
    def __init__(self, owner: _Optional[str] = ..., fencing_token: _Optional[int] = ..., ttl_seconds: _Optional[float] = ..., acquired_at: _Optional[float] = ...) -> None: ...
