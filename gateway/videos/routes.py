"""Video tasks: POST /v1/video/generations, GET /v1/video/generations[/{task_id}]."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, get, post
from litestar.params import FromPath, HeaderParameter, JSONBody, QueryParameter
from litestar.response import Response

from gateway.backend import backend_of, call_metadata, unary
from gateway.body import StrictJSON
from gateway.encoding import json_response
from gateway.openapi import ERROR_RESPONSES
from gateway.urls import public_base_url
from gateway.videos.convert import video_from_proto, video_request
from gateway.videos.schemas import VideoGeneration, VideoGenerationList, VideoGenerationRequest
from raven.v1 import video_service_pb2

__all__ = ["VideosController"]

_INT32_MAX = 2**31 - 1


class VideosController(Controller):
    """Asynchronous video generation tasks, owned by the key that created them."""

    path = "/video/generations"
    tags = ["video"]

    @post(
        "",
        operation_id="CreateVideoGeneration",
        summary="Submit a video generation task",
        dto=StrictJSON[VideoGenerationRequest],
        return_dto=None,
        status_code=200,
        responses=ERROR_RESPONSES,
    )
    async def create_video(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[VideoGenerationRequest],
        idempotency_key: Annotated[
            str | None,
            HeaderParameter(name="Idempotency-Key", description="Makes retries of this submission idempotent."),
        ] = None,
    ) -> Response[VideoGeneration]:
        """Submit a task; it starts ``queued``. Poll it with GET /v1/video/generations/{task_id}."""
        message = video_request(data, idempotency_key)
        reply: video_service_pb2.CreateVideoGenerationResponse
        reply, headers = await unary(backend_of(request).videos.CreateVideoGeneration, message, call_metadata(request))
        return json_response(video_from_proto(reply.video_generation, public_base_url(request)), headers)

    @get("/{task_id:str}", operation_id="GetVideoGeneration", summary="Poll a task", responses=ERROR_RESPONSES)
    async def get_video(self, request: Request[Any, Any, Any], task_id: FromPath[str]) -> Response[VideoGeneration]:
        """The task's status, progress and, when completed, its output URLs."""
        message = video_service_pb2.GetVideoGenerationRequest(id=task_id)
        reply: video_service_pb2.GetVideoGenerationResponse
        reply, headers = await unary(backend_of(request).videos.GetVideoGeneration, message, call_metadata(request))
        return json_response(video_from_proto(reply.video_generation, public_base_url(request)), headers)

    @get("", operation_id="ListVideoGenerations", summary="List tasks", responses=ERROR_RESPONSES)
    async def list_videos(
        self,
        request: Request[Any, Any, Any],
        limit: Annotated[int | None, QueryParameter(ge=0, le=_INT32_MAX, description="Page size.")] = None,
        page_token: Annotated[str | None, QueryParameter(description="From next_page_token.")] = None,
    ) -> Response[VideoGenerationList]:
        """The key's tasks, newest first."""
        message = video_service_pb2.ListVideoGenerationsRequest(page_size=limit or 0, page_token=page_token or "")
        reply: video_service_pb2.ListVideoGenerationsResponse
        reply, headers = await unary(backend_of(request).videos.ListVideoGenerations, message, call_metadata(request))
        base = public_base_url(request)
        return json_response(
            VideoGenerationList(
                data=[video_from_proto(task, base) for task in reply.video_generations],
                has_more=bool(reply.next_page_token),
                next_page_token=reply.next_page_token or None,
            ),
            headers,
        )
