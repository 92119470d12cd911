"""Video JSON <-> protos."""

from __future__ import annotations

from typing import Final

from msgspec import UNSET

from gateway.encoding import decimal_number
from gateway.errors import ApiError, status_error_code
from gateway.urls import absolute_url
from gateway.videos.schemas import (
    VideoGeneration,
    VideoGenerationRequest,
    VideoOutput,
    VideoStatus,
    VideoTaskError,
)
from raven.v1 import video_pb2, video_service_pb2

__all__ = ["video_from_proto", "video_request"]

_State = video_pb2.VideoGeneration.State
_STATUS: Final[dict[int, VideoStatus]] = {
    _State.STATE_QUEUED: "queued",
    _State.STATE_RUNNING: "in_progress",
    _State.STATE_SUCCEEDED: "completed",
    _State.STATE_FAILED: "failed",
}
_OPTIONAL = ("seconds", "size", "image", "seed")


def video_request(
    body: VideoGenerationRequest, idempotency_key: str | None
) -> video_service_pb2.CreateVideoGenerationRequest:
    """The CreateVideoGenerationRequest for a body and its Idempotency-Key header."""
    fields = {name: value for name in _OPTIONAL if (value := getattr(body, name)) is not None}
    try:
        return video_service_pb2.CreateVideoGenerationRequest(
            model=body.model, prompt=body.prompt, request_id=idempotency_key or "", **fields
        )
    except (ValueError, TypeError) as exc:
        raise ApiError(400, f"Invalid request: {exc}", code="invalid_value") from None


def video_from_proto(task: video_pb2.VideoGeneration, base_url: str) -> VideoGeneration:
    """The JSON task object; output paths become absolute under ``base_url``."""
    outputs = [
        VideoOutput(url=absolute_url(out.url, base_url), mime_type=out.mime_type, size_bytes=out.size_bytes)
        for out in task.outputs
    ]
    error = None
    if task.HasField("error") and (task.error.code or task.error.message):
        error = VideoTaskError(message=task.error.message, code=status_error_code(task.error))
    return VideoGeneration(
        id=task.id,
        model=task.model,
        status=_STATUS.get(task.state, "queued"),
        progress=task.progress,
        created_at=task.create_time.seconds,
        completed_at=task.complete_time.seconds if task.HasField("complete_time") else None,
        expires_at=task.expire_time.seconds if task.HasField("expire_time") else UNSET,
        prompt=task.prompt,
        seconds=task.seconds,
        size=task.size,
        outputs=outputs,
        url=outputs[0].url if outputs else None,
        error=error,
        cost=decimal_number(task.cost),
    )
