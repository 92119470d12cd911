from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Pricing(_message.Message):
    __slots__ = ("prompt", "completion", "image", "video_second", "input_cache_read", "input_cache_write")
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    VIDEO_SECOND_FIELD_NUMBER: _ClassVar[int]
    INPUT_CACHE_READ_FIELD_NUMBER: _ClassVar[int]
    INPUT_CACHE_WRITE_FIELD_NUMBER: _ClassVar[int]
    prompt: str
    completion: str
    image: str
    video_second: str
    input_cache_read: str
    input_cache_write: str
    def __init__(self, prompt: _Optional[str] = ..., completion: _Optional[str] = ..., image: _Optional[str] = ..., video_second: _Optional[str] = ..., input_cache_read: _Optional[str] = ..., input_cache_write: _Optional[str] = ...) -> None: ...

class Model(_message.Message):
    __slots__ = ("id", "object", "created", "owned_by", "capabilities", "context_length", "pricing", "supported_parameters", "description", "embedding_dimensions")
    ID_FIELD_NUMBER: _ClassVar[int]
    OBJECT_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    OWNED_BY_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_LENGTH_FIELD_NUMBER: _ClassVar[int]
    PRICING_FIELD_NUMBER: _ClassVar[int]
    SUPPORTED_PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_DIMENSIONS_FIELD_NUMBER: _ClassVar[int]
    id: str
    object: str
    created: int
    owned_by: str
    capabilities: _containers.RepeatedScalarFieldContainer[str]
    context_length: int
    pricing: Pricing
    supported_parameters: _containers.RepeatedScalarFieldContainer[str]
    description: str
    embedding_dimensions: int
    def __init__(self, id: _Optional[str] = ..., object: _Optional[str] = ..., created: _Optional[int] = ..., owned_by: _Optional[str] = ..., capabilities: _Optional[_Iterable[str]] = ..., context_length: _Optional[int] = ..., pricing: _Optional[_Union[Pricing, _Mapping]] = ..., supported_parameters: _Optional[_Iterable[str]] = ..., description: _Optional[str] = ..., embedding_dimensions: _Optional[int] = ...) -> None: ...
