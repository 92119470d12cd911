from raven.v1 import usage_pb2 as _usage_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GenerateImagesRequest(_message.Message):
    __slots__ = ("model", "prompt", "n", "size", "response_format", "quality", "style", "user", "seed")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    N_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FORMAT_FIELD_NUMBER: _ClassVar[int]
    QUALITY_FIELD_NUMBER: _ClassVar[int]
    STYLE_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    model: str
    prompt: str
    n: int
    size: str
    response_format: str
    quality: str
    style: str
    user: str
    seed: int
    def __init__(self, model: _Optional[str] = ..., prompt: _Optional[str] = ..., n: _Optional[int] = ..., size: _Optional[str] = ..., response_format: _Optional[str] = ..., quality: _Optional[str] = ..., style: _Optional[str] = ..., user: _Optional[str] = ..., seed: _Optional[int] = ...) -> None: ...

class GeneratedImage(_message.Message):
    __slots__ = ("b64_json", "url", "revised_prompt")
    B64_JSON_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    REVISED_PROMPT_FIELD_NUMBER: _ClassVar[int]
    b64_json: str
    url: str
    revised_prompt: str
    def __init__(self, b64_json: _Optional[str] = ..., url: _Optional[str] = ..., revised_prompt: _Optional[str] = ...) -> None: ...

class GenerateImagesResponse(_message.Message):
    __slots__ = ("created", "data", "id", "usage")
    CREATED_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    created: int
    data: _containers.RepeatedCompositeFieldContainer[GeneratedImage]
    id: str
    usage: _usage_pb2.Usage
    def __init__(self, created: _Optional[int] = ..., data: _Optional[_Iterable[_Union[GeneratedImage, _Mapping]]] = ..., id: _Optional[str] = ..., usage: _Optional[_Union[_usage_pb2.Usage, _Mapping]] = ...) -> None: ...
