import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.rpc import status_pb2 as _status_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class VideoGeneration(_message.Message):
    __slots__ = ("id", "model", "state", "progress", "create_time", "complete_time", "expire_time", "error", "prompt", "seconds", "size", "outputs", "cost")
    class State(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        STATE_UNSPECIFIED: _ClassVar[VideoGeneration.State]
        STATE_QUEUED: _ClassVar[VideoGeneration.State]
        STATE_RUNNING: _ClassVar[VideoGeneration.State]
        STATE_SUCCEEDED: _ClassVar[VideoGeneration.State]
        STATE_FAILED: _ClassVar[VideoGeneration.State]
    STATE_UNSPECIFIED: VideoGeneration.State
    STATE_QUEUED: VideoGeneration.State
    STATE_RUNNING: VideoGeneration.State
    STATE_SUCCEEDED: VideoGeneration.State
    STATE_FAILED: VideoGeneration.State
    ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    COMPLETE_TIME_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    COST_FIELD_NUMBER: _ClassVar[int]
    id: str
    model: str
    state: VideoGeneration.State
    progress: int
    create_time: _timestamp_pb2.Timestamp
    complete_time: _timestamp_pb2.Timestamp
    expire_time: _timestamp_pb2.Timestamp
    error: _status_pb2.Status
    prompt: str
    seconds: int
    size: str
    outputs: _containers.RepeatedCompositeFieldContainer[VideoOutput]
    cost: str
    def __init__(self, id: _Optional[str] = ..., model: _Optional[str] = ..., state: _Optional[_Union[VideoGeneration.State, str]] = ..., progress: _Optional[int] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., complete_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., expire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., error: _Optional[_Union[_status_pb2.Status, _Mapping]] = ..., prompt: _Optional[str] = ..., seconds: _Optional[int] = ..., size: _Optional[str] = ..., outputs: _Optional[_Iterable[_Union[VideoOutput, _Mapping]]] = ..., cost: _Optional[str] = ...) -> None: ...

class VideoOutput(_message.Message):
    __slots__ = ("url", "mime_type", "size_bytes")
    URL_FIELD_NUMBER: _ClassVar[int]
    MIME_TYPE_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    url: str
    mime_type: str
    size_bytes: int
    def __init__(self, url: _Optional[str] = ..., mime_type: _Optional[str] = ..., size_bytes: _Optional[int] = ...) -> None: ...
