from raven.v1 import video_pb2 as _video_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CreateVideoGenerationRequest(_message.Message):
    __slots__ = ("model", "prompt", "seconds", "size", "image", "request_id", "seed")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    model: str
    prompt: str
    seconds: int
    size: str
    image: str
    request_id: str
    seed: int
    def __init__(self, model: _Optional[str] = ..., prompt: _Optional[str] = ..., seconds: _Optional[int] = ..., size: _Optional[str] = ..., image: _Optional[str] = ..., request_id: _Optional[str] = ..., seed: _Optional[int] = ...) -> None: ...

class CreateVideoGenerationResponse(_message.Message):
    __slots__ = ("video_generation",)
    VIDEO_GENERATION_FIELD_NUMBER: _ClassVar[int]
    video_generation: _video_pb2.VideoGeneration
    def __init__(self, video_generation: _Optional[_Union[_video_pb2.VideoGeneration, _Mapping]] = ...) -> None: ...

class GetVideoGenerationRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class GetVideoGenerationResponse(_message.Message):
    __slots__ = ("video_generation",)
    VIDEO_GENERATION_FIELD_NUMBER: _ClassVar[int]
    video_generation: _video_pb2.VideoGeneration
    def __init__(self, video_generation: _Optional[_Union[_video_pb2.VideoGeneration, _Mapping]] = ...) -> None: ...

class ListVideoGenerationsRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListVideoGenerationsResponse(_message.Message):
    __slots__ = ("video_generations", "next_page_token")
    VIDEO_GENERATIONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    video_generations: _containers.RepeatedCompositeFieldContainer[_video_pb2.VideoGeneration]
    next_page_token: str
    def __init__(self, video_generations: _Optional[_Iterable[_Union[_video_pb2.VideoGeneration, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...
