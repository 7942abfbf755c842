from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class WaitGroupState(_message.Message):
    __slots__ = ("count", "added", "done")
    COUNT_FIELD_NUMBER: _ClassVar[int]
    ADDED_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    count: int
    added: int
    done: int
    def __init__(self, count: _Optional[int] = ..., added: _Optional[int] = ..., done: _Optional[int] = ...) -> None: ...
