"""ModelService, ImageService, VideoService and FileService servicers."""

from __future__ import annotations

import base64
import binascii
from collections.abc import AsyncIterator

from raven.v1 import (
    file_service_pb2,
    file_service_pb2_grpc,
    image_service_pb2,
    image_service_pb2_grpc,
    model_service_pb2,
    model_service_pb2_grpc,
    video_service_pb2,
    video_service_pb2_grpc,
)
from raven_service.api import convert
from raven_service.api.context import authenticate, send_rate, unary_call
from raven_service.api.errors import abort
from raven_service.app.admission import Admitter
from raven_service.app.media import OUTPUT_TTL, FileUseCase, ImageUseCase, VideoUseCase
from raven_service.core.errors import InvalidArgument, RavenError
from raven_service.policy.auth import Authenticator
from raven_service.policy.governance import check_model, model_allowed
from raven_service.routing.catalogue import Catalogue

CHUNK = 256 * 1024


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, auth: Authenticator, catalogue: Catalogue, admitter: Admitter) -> None:
        self._auth = auth
        self._catalogue = catalogue
        self._admitter = admitter

    @unary_call
    async def ListModels(self, request, context, principal):
        # A key with a model allow-list sees only the models it may call (SPEC §11).
        return model_service_pb2.ListModelsResponse(
            models=[convert.model(m) for m in self._catalogue.list(request.capability)
                    if model_allowed(principal.models, m.id)])

    @unary_call
    async def GetModel(self, request, context, principal):
        model = self._catalogue.get(request.id)
        check_model(principal, model.id)
        return model_service_pb2.GetModelResponse(model=convert.model(model))


class ImageServicer(image_service_pb2_grpc.ImageServiceServicer):
    def __init__(self, auth: Authenticator, images: ImageUseCase, admitter: Admitter) -> None:
        self._auth = auth
        self._images = images
        self._admitter = admitter

    @unary_call
    async def GenerateImages(self, request: image_service_pb2.GenerateImagesRequest, context, principal):
        result = await self._images.generate(
            principal, request.model, request.prompt,
            n=request.n if request.HasField("n") else None,
            size=request.size if request.HasField("size") else None,
            response_format=request.response_format if request.HasField("response_format") else None,
            seed=request.seed if request.HasField("seed") else None,
            quality=request.quality if request.HasField("quality") else None,
            style=request.style if request.HasField("style") else None,
        )
        data = [
            image_service_pb2.GeneratedImage(b64_json="" if file_id else base64.b64encode(png).decode(),
                                             url=convert.file_url(file_id) if file_id else "",
                                             revised_prompt=revised)
            for png, file_id, revised in result.images
        ]
        return image_service_pb2.GenerateImagesResponse(
            created=result.created, data=data, id=result.id, usage=convert.usage(0, 0, result.cost, False))


def _decode_image(value: str) -> bytes:
    """A data: URL (or bare base64) of a PNG/JPEG."""
    payload = value.split(",", 1)[1] if value.startswith("data:") and "," in value else value
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidArgument("'image' must be a base64 data: URL of a PNG or JPEG.", param="image") from None
    if not (data.startswith(b"\x89PNG\r\n\x1a\n") or data.startswith(b"\xff\xd8")):
        raise InvalidArgument("'image' must be a PNG or JPEG.", param="image")
    return data


class VideoServicer(video_service_pb2_grpc.VideoServiceServicer):
    def __init__(self, auth: Authenticator, videos: VideoUseCase, admitter: Admitter, *,
                 output_ttl: float = OUTPUT_TTL) -> None:
        self._auth = auth
        self._videos = videos
        self._admitter = admitter
        self._ttl = output_ttl

    @unary_call
    async def CreateVideoGeneration(self, request: video_service_pb2.CreateVideoGenerationRequest, context,
                                    principal):
        image = _decode_image(request.image) if request.HasField("image") and request.image else None
        task = await self._videos.create(
            principal, request.model, request.prompt,
            seconds=request.seconds if request.HasField("seconds") else None,
            size=request.size if request.HasField("size") else None,
            image=image, request_id=request.request_id,
            seed=request.seed if request.HasField("seed") else None,
        )
        return video_service_pb2.CreateVideoGenerationResponse(video_generation=convert.video(task, self._ttl))

    @unary_call
    async def GetVideoGeneration(self, request, context, principal):
        task = await self._videos.get(principal, request.id)
        return video_service_pb2.GetVideoGenerationResponse(video_generation=convert.video(task, self._ttl))

    @unary_call
    async def ListVideoGenerations(self, request, context, principal):
        tasks, token = await self._videos.list(principal, request.page_size, request.page_token)
        return video_service_pb2.ListVideoGenerationsResponse(
            video_generations=[convert.video(t, self._ttl) for t in tasks], next_page_token=token)


class FileServicer(file_service_pb2_grpc.FileServiceServicer):
    def __init__(self, auth: Authenticator, files: FileUseCase, admitter: Admitter) -> None:
        self._auth = auth
        self._files = files
        self._admitter = admitter

    async def DownloadFile(self, request, context) -> AsyncIterator[file_service_pb2.DownloadFileResponse]:
        principal = await authenticate(self._auth, context)
        try:
            f = await self._files.get(principal, request.id)
        except RavenError as exc:
            await self._admitter.attach_rate(exc, principal)
            await abort(context, exc)
            raise
        await send_rate(context, await self._admitter.peek(principal))
        data = f.data
        yield file_service_pb2.DownloadFileResponse(mime_type=f.mime_type, size_bytes=len(data),
                                                    data=data[:CHUNK])
        for off in range(CHUNK, len(data), CHUNK):
            yield file_service_pb2.DownloadFileResponse(data=data[off:off + CHUNK])
