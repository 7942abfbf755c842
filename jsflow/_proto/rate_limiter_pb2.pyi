from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class RateLimitState(_message.Message):
    __slots__ = ("tat", "window", "tat_ns", "fixed_window", "fixed_count")
    TAT_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    TAT_NS_FIELD_NUMBER: _ClassVar[int]
    FIXED_WINDOW_FIELD_NUMBER: _ClassVar[int]
    FIXED_COUNT_FIELD_NUMBER: _ClassVar[int]
    tat: float
    window: _containers.RepeatedScalarFieldContainer[float]
    tat_ns: int
    fixed_window: int
    fixed_count: int
    def __init__(self, tat: _Optional[float] = ..., window: _Optional[_Iterable[float]] = ..., tat_ns: _Optional[int] = ..., fixed_window: _Optional[int] = ..., fixed_count: _Optional[int] = ...) -> None: ...
