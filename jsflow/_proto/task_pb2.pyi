from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TaskStatusCode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TASK_STATUS_UNSPECIFIED: _ClassVar[TaskStatusCode]
    TASK_STATUS_PENDING: _ClassVar[TaskStatusCode]
    TASK_STATUS_RUNNING: _ClassVar[TaskStatusCode]
    TASK_STATUS_RETRYING: _ClassVar[TaskStatusCode]
    TASK_STATUS_SUCCEEDED: _ClassVar[TaskStatusCode]
    TASK_STATUS_FAILED: _ClassVar[TaskStatusCode]
    TASK_STATUS_CANCELLED: _ClassVar[TaskStatusCode]
    TASK_STATUS_DEAD: _ClassVar[TaskStatusCode]
TASK_STATUS_UNSPECIFIED: TaskStatusCode
TASK_STATUS_PENDING: TaskStatusCode
TASK_STATUS_RUNNING: TaskStatusCode
TASK_STATUS_RETRYING: TaskStatusCode
TASK_STATUS_SUCCEEDED: TaskStatusCode
TASK_STATUS_FAILED: TaskStatusCode
TASK_STATUS_CANCELLED: TaskStatusCode
TASK_STATUS_DEAD: TaskStatusCode

class TaskArgs(_message.Message):
    __slots__ = ("args", "kwargs")
    class KwargsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: bytes
        def __init__(self, key: _Optional[str] = ..., value: _Optional[bytes] = ...) -> None: ...
    ARGS_FIELD_NUMBER: _ClassVar[int]
    KWARGS_FIELD_NUMBER: _ClassVar[int]
    args: _containers.RepeatedScalarFieldContainer[bytes]
    kwargs: _containers.ScalarMap[str, bytes]
    def __init__(self, args: _Optional[_Iterable[bytes]] = ..., kwargs: _Optional[_Mapping[str, bytes]] = ...) -> None: ...

class TaskState(_message.Message):
    __slots__ = ("id", "name", "status", "attempt", "args", "args_ref", "result", "result_ref", "error_type", "error_message", "worker", "created_at", "started_at", "finished_at", "cancel_requested", "depends_on", "dependents", "released", "replays", "traceback")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    ARGS_FIELD_NUMBER: _ClassVar[int]
    ARGS_REF_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    RESULT_REF_FIELD_NUMBER: _ClassVar[int]
    ERROR_TYPE_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    WORKER_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    CANCEL_REQUESTED_FIELD_NUMBER: _ClassVar[int]
    DEPENDS_ON_FIELD_NUMBER: _ClassVar[int]
    DEPENDENTS_FIELD_NUMBER: _ClassVar[int]
    RELEASED_FIELD_NUMBER: _ClassVar[int]
    REPLAYS_FIELD_NUMBER: _ClassVar[int]
    TRACEBACK_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    status: TaskStatusCode
    attempt: int
    args: bytes
    args_ref: str
    result: bytes
    result_ref: str
    error_type: str
    error_message: str
    worker: str
    created_at: float
    started_at: float
    finished_at: float
    cancel_requested: bool
    depends_on: _containers.RepeatedScalarFieldContainer[str]
    dependents: _containers.RepeatedScalarFieldContainer[str]
    released: bool
    replays: int
    traceback: str
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., status: _Optional[_Union[TaskStatusCode, str]] = ..., attempt: _Optional[int] = ..., args: _Optional[bytes] = ..., args_ref: _Optional[str] = ..., result: _Optional[bytes] = ..., result_ref: _Optional[str] = ..., error_type: _Optional[str] = ..., error_message: _Optional[str] = ..., worker: _Optional[str] = ..., created_at: _Optional[float] = ..., started_at: _Optional[float] = ..., finished_at: _Optional[float] = ..., cancel_requested: _Optional[bool] = ..., depends_on: _Optional[_Iterable[str]] = ..., dependents: _Optional[_Iterable[str]] = ..., released: _Optional[bool] = ..., replays: _Optional[int] = ..., traceback: _Optional[str] = ...) -> None: ...

class TaskEvent(_message.Message):
    __slots__ = ("task_id", "name", "kind", "attempt", "progress", "message", "error_type", "error_message", "time")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ERROR_TYPE_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    name: str
    kind: str
    attempt: int
    progress: float
    message: str
    error_type: str
    error_message: str
    time: float
    def __init__(self, task_id: _Optional[str] = ..., name: _Optional[str] = ..., kind: _Optional[str] = ..., attempt: _Optional[int] = ..., progress: _Optional[float] = ..., message: _Optional[str] = ..., error_type: _Optional[str] = ..., error_message: _Optional[str] = ..., time: _Optional[float] = ...) -> None: ...
