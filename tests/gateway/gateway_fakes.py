"""A scripted fake of the raven.v1 gRPC services for gateway tests.

Real ``grpc.aio`` servicers (subclasses of the generated bases) on 127.0.0.1:0. Each RPC records
what it received (the request proto and the invocation metadata) and answers through a replaceable
async handler, so a test scripts exactly the responses, metadata and ``google.rpc.Status`` errors
the real service would produce. Nothing here imports raven_service.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf import any_pb2, duration_pb2, timestamp_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from raven.v1 import (
    chat_pb2,
    chat_service_pb2,
    chat_service_pb2_grpc,
    file_service_pb2,
    file_service_pb2_grpc,
    image_service_pb2,
    image_service_pb2_grpc,
    model_pb2,
    model_service_pb2,
    model_service_pb2_grpc,
    usage_pb2,
    usage_service_pb2,
    usage_service_pb2_grpc,
    video_pb2,
    video_service_pb2,
    video_service_pb2_grpc,
)

Metadata = tuple[tuple[str, str], ...]
RATE_METADATA: Metadata = (
    ("x-ratelimit-limit-requests", "60"),
    ("x-ratelimit-remaining-requests", "59"),
    ("x-ratelimit-reset-requests", "60s"),
)

Unary = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]
Streaming = Callable[[Any, grpc.aio.ServicerContext], AsyncIterator[Any]]


@dataclass
class Received:
    """One call the fake received."""

    request: Any
    metadata: dict[str, str]


def _pack(message: Any) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


async def abort(
    context: grpc.aio.ServicerContext,
    code: grpc.StatusCode,
    message: str,
    *,
    reason: str | None = None,
    field: str | None = None,
    retry_after: float | None = None,
    metadata: Metadata = RATE_METADATA,
) -> None:
    """Abort like the service: google.rpc.Status with ErrorInfo / BadRequest / RetryInfo details."""
    details = []
    if reason is not None:
        details.append(_pack(error_details_pb2.ErrorInfo(reason=reason, domain="raven")))
    if field is not None:
        violation = error_details_pb2.BadRequest.FieldViolation(field=field, description=message)
        details.append(_pack(error_details_pb2.BadRequest(field_violations=[violation])))
    if retry_after is not None:
        delay = duration_pb2.Duration(seconds=int(retry_after), nanos=int((retry_after % 1) * 1e9))
        details.append(_pack(error_details_pb2.RetryInfo(retry_delay=delay)))
    status = rpc_status.to_status(status_pb2.Status(code=code.value[0], message=message, details=details))
    await context.abort(status.code, status.details, tuple(status.trailing_metadata) + tuple(metadata))


def _record(log: list[Received], request: Any, context: grpc.aio.ServicerContext) -> None:
    log.append(Received(request, {k: v for k, v in context.invocation_metadata() or () if isinstance(v, str)}))


async def require_key(context: grpc.aio.ServicerContext) -> None:
    """UNAUTHENTICATED unless the call carries ``authorization: Bearer rk-test``."""
    metadata = dict(context.invocation_metadata() or ())
    if metadata.get("authorization") != "Bearer rk-test":
        await abort(context, grpc.StatusCode.UNAUTHENTICATED, "Invalid API key.", reason="INVALID_API_KEY", metadata=())


# ------------------------------------------------------------------------------ default answers


def completion(content: str | None = "Hello there!", **overrides: Any) -> chat_service_pb2.CreateChatCompletionResponse:
    """A unary chat reply."""
    message = chat_pb2.AssistantMessage(role="assistant")
    if content is not None:
        message.content = content
    reply = chat_service_pb2.CreateChatCompletionResponse(
        id="chatcmpl-1",
        model="raven/local-chat",
        created=1_710_000_000,
        choices=[chat_pb2.ChatChoice(index=0, message=message, finish_reason="stop", native_finish_reason="stop")],
        usage=usage_pb2.Usage(prompt_tokens=12, completion_tokens=3, total_tokens=15, cost="0.000123"),
        provider="local",
    )
    for name, value in overrides.items():
        setattr(reply, name, value)
    return reply


def chunk(
    *,
    role: str | None = None,
    content: str | None = None,
    finish_reason: str | None = None,
    tool_calls: Sequence[chat_pb2.ToolCallDelta] = (),
) -> chat_service_pb2.StreamChatCompletionResponse:
    """A stream message with one choice."""
    delta = chat_pb2.ChatDelta(tool_calls=list(tool_calls))
    if role is not None:
        delta.role = role
    if content is not None:
        delta.content = content
    choice = chat_pb2.ChunkChoice(index=0, delta=delta)
    if finish_reason is not None:
        choice.finish_reason = finish_reason
        choice.native_finish_reason = finish_reason
    return chat_service_pb2.StreamChatCompletionResponse(
        id="chatcmpl-s", model="raven/local-chat", created=1_710_000_000, choices=[choice]
    )


def usage_message(prompt: int = 5, completion_tokens: int = 3) -> chat_service_pb2.StreamChatCompletionResponse:
    """The last message of a stream: usage, no choices."""
    return chat_service_pb2.StreamChatCompletionResponse(
        id="chatcmpl-s",
        model="raven/local-chat",
        created=1_710_000_000,
        usage=usage_pb2.Usage(
            prompt_tokens=prompt,
            completion_tokens=completion_tokens,
            total_tokens=prompt + completion_tokens,
            cost="0.0000042",
        ),
    )


def text_stream(*pieces: str) -> list[chat_service_pb2.StreamChatCompletionResponse]:
    """A complete stream: role chunk, one chunk per piece, finish chunk, usage."""
    messages = [chunk(role="assistant", content="")]
    messages += [chunk(content=piece) for piece in pieces]
    messages.append(chunk(finish_reason="stop"))
    messages.append(usage_message())
    return messages


def model(slug: str = "raven/local-chat", capabilities: Sequence[str] = ("chat", "tools", "json")) -> model_pb2.Model:
    """A catalogue entry."""
    return model_pb2.Model(
        id=slug,
        object="model",
        created=1_700_000_000,
        owned_by="local",
        capabilities=list(capabilities),
        context_length=32_768,
        pricing=model_pb2.Pricing(prompt="0.5", completion="1.5"),
        supported_parameters=["max_tokens", "temperature"],
        description="A local model.",
    )


def video_task(state: int = video_pb2.VideoGeneration.STATE_QUEUED, **overrides: Any) -> video_pb2.VideoGeneration:
    """A video task."""
    task = video_pb2.VideoGeneration(
        id="vid-1",
        model="raven/local-video",
        state=state,  # type: ignore[arg-type]
        progress=0,
        create_time=timestamp_pb2.Timestamp(seconds=1_710_000_000),
        prompt="a raven",
        seconds=4,
        size="640x360",
        cost="0.04",
    )
    for name, value in overrides.items():
        if isinstance(value, list):
            getattr(task, name).extend(value)
        elif hasattr(value, "CopyFrom"):
            getattr(task, name).CopyFrom(value)
        else:
            setattr(task, name, value)
    return task


# ----------------------------------------------------------------------------------- servicers


class FakeChat(chat_service_pb2_grpc.ChatServiceServicer):
    """ChatService: ``unary`` and ``stream`` are the scripted handlers."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.unary: Unary = self._default_unary
        self.stream: Streaming = self._default_stream
        self.cancelled = asyncio.Event()

    async def _default_unary(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        await require_key(context)
        await context.send_initial_metadata((*RATE_METADATA, ("x-raven-provider", "local")))
        return completion()

    async def _default_stream(self, request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        await require_key(context)
        await context.send_initial_metadata((*RATE_METADATA, ("x-raven-provider", "local")))
        for message in text_stream("Hello", ", ", "world"):
            yield message

    async def CreateChatCompletion(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        _record(self.received, request, context)
        return await self.unary(request, context)

    async def StreamChatCompletion(self, request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        _record(self.received, request, context)
        try:
            async for message in self.stream(request, context):
                yield message
        except asyncio.CancelledError:
            self.cancelled.set()
            raise


class FakeModels(model_service_pb2_grpc.ModelServiceServicer):
    """ModelService over a fixed catalogue."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.catalogue = [model(), model("raven/local-image", ("images",))]

    async def ListModels(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        _record(self.received, request, context)
        await require_key(context)
        await context.send_initial_metadata(RATE_METADATA)
        return model_service_pb2.ListModelsResponse(models=self.catalogue)

    async def GetModel(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        _record(self.received, request, context)
        await require_key(context)
        for entry in self.catalogue:
            if entry.id == request.id:
                await context.send_initial_metadata(RATE_METADATA)
                return model_service_pb2.GetModelResponse(model=entry)
        await abort(
            context, grpc.StatusCode.NOT_FOUND, f"The model `{request.id}` does not exist.", reason="MODEL_NOT_FOUND"
        )


class FakeImages(image_service_pb2_grpc.ImageServiceServicer):
    """ImageService: one tiny image per ``n``, b64 or a file path."""

    def __init__(self) -> None:
        self.received: list[Received] = []

    async def GenerateImages(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        _record(self.received, request, context)
        await require_key(context)
        count = request.n if request.HasField("n") else 1
        as_url = request.response_format == "url"
        data = [
            image_service_pb2.GeneratedImage(
                b64_json="" if as_url else "iVBORw0KGgo=",
                url=f"/v1/files/file-{i}/content" if as_url else "",
                revised_prompt=request.prompt,
            )
            for i in range(count)
        ]
        return image_service_pb2.GenerateImagesResponse(
            created=1_710_000_000,
            data=data,
            id="img-1",
            usage=usage_pb2.Usage(prompt_tokens=4, total_tokens=4, cost="0.01"),
        )


class FakeVideos(video_service_pb2_grpc.VideoServiceServicer):
    """VideoService: tasks by id; unknown ids are NOT_FOUND."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.tasks: dict[str, video_pb2.VideoGeneration] = {}

    async def CreateVideoGeneration(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        _record(self.received, request, context)
        await require_key(context)
        task = video_task(prompt=request.prompt, model=request.model)
        self.tasks[task.id] = task
        return video_service_pb2.CreateVideoGenerationResponse(video_generation=task)

    async def GetVideoGeneration(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        _record(self.received, request, context)
        await require_key(context)
        if request.id not in self.tasks:
            await abort(context, grpc.StatusCode.NOT_FOUND, "No such video generation.", reason="NOT_FOUND")
        return video_service_pb2.GetVideoGenerationResponse(video_generation=self.tasks[request.id])

    async def ListVideoGenerations(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        _record(self.received, request, context)
        await require_key(context)
        return video_service_pb2.ListVideoGenerationsResponse(
            video_generations=list(self.tasks.values()), next_page_token="next" if request.page_size == 1 else ""
        )


class FakeFiles(file_service_pb2_grpc.FileServiceServicer):
    """FileService: ``files`` maps id -> (mime type, chunks)."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.files: dict[str, tuple[str, list[bytes]]] = {}

    async def DownloadFile(self, request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        _record(self.received, request, context)
        await require_key(context)
        if request.id not in self.files:
            await abort(context, grpc.StatusCode.NOT_FOUND, "No such file.", reason="NOT_FOUND")
        mime, chunks = self.files[request.id]
        size = sum(len(c) for c in chunks)
        for index, data in enumerate(chunks):
            if index == 0:
                yield file_service_pb2.DownloadFileResponse(mime_type=mime, size_bytes=size, data=data)
            else:
                yield file_service_pb2.DownloadFileResponse(data=data)


class FakeUsage(usage_service_pb2_grpc.UsageServiceServicer):
    """UsageService: ``generations`` maps id -> record."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.generations: dict[str, usage_service_pb2.Generation] = {}

    async def GetGeneration(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        _record(self.received, request, context)
        await require_key(context)
        if request.id not in self.generations:
            await abort(context, grpc.StatusCode.NOT_FOUND, "No such generation.", reason="NOT_FOUND")
        return usage_service_pb2.GetGenerationResponse(generation=self.generations[request.id])


@dataclass
class FakeService:
    """All fakes behind one server."""

    server: grpc.aio.Server
    target: str
    chat: FakeChat = field(default_factory=FakeChat)
    models: FakeModels = field(default_factory=FakeModels)
    images: FakeImages = field(default_factory=FakeImages)
    videos: FakeVideos = field(default_factory=FakeVideos)
    files: FakeFiles = field(default_factory=FakeFiles)
    usage: FakeUsage = field(default_factory=FakeUsage)
    health: health.aio.HealthServicer = field(default_factory=health.aio.HealthServicer)

    def received_beyond_auth_probe(self) -> list[Received]:
        """Every call but the gateway's auth-first probe (ListModels for capability "-auth-probe-",
        made when a body is bad so that a bad key answers 401 first)."""
        return [r for r in self.all_received()
                if getattr(r.request, "capability", None) != "-auth-probe-"]

    def all_received(self) -> list[Received]:
        """Every call any fake received."""
        return [
            *self.chat.received,
            *self.models.received,
            *self.images.received,
            *self.videos.received,
            *self.files.received,
            *self.usage.received,
        ]


def add_fakes(fake: FakeService, server: Any) -> None:
    """Registers every fake on `server` (a grpc.aio server, or the in-process handler registry)."""
    chat_service_pb2_grpc.add_ChatServiceServicer_to_server(fake.chat, server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(fake.models, server)
    image_service_pb2_grpc.add_ImageServiceServicer_to_server(fake.images, server)
    video_service_pb2_grpc.add_VideoServiceServicer_to_server(fake.videos, server)
    file_service_pb2_grpc.add_FileServiceServicer_to_server(fake.files, server)
    usage_service_pb2_grpc.add_UsageServiceServicer_to_server(fake.usage, server)
    health_pb2_grpc.add_HealthServicer_to_server(fake.health, server)


async def start_fake_service() -> FakeService:
    """Start the fakes on 127.0.0.1 (ephemeral port)."""
    server = grpc.aio.server()
    port = server.add_insecure_port("127.0.0.1:0")
    fake = FakeService(server=server, target=f"127.0.0.1:{port}")
    add_fakes(fake, server)
    await fake.health.set("", health_pb2.HealthCheckResponse.SERVING)
    await server.start()
    return fake
