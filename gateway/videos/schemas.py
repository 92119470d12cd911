"""Video generation task wire types."""

from __future__ import annotations

from typing import Literal

import msgspec
from msgspec import UNSET, UnsetType

from gateway.schemas import Credits, Int32, Int64

__all__ = ["VideoGeneration", "VideoGenerationList", "VideoGenerationRequest", "VideoOutput", "VideoTaskError"]

VideoStatus = Literal["queued", "in_progress", "completed", "failed"]


class VideoGenerationRequest(msgspec.Struct, kw_only=True):
    """The body of POST /v1/video/generations (retry safely with an ``Idempotency-Key`` header)."""

    model: str
    prompt: str
    #: Duration in seconds.
    seconds: Int32 | None = None
    #: "WIDTHxHEIGHT".
    size: str | None = None
    #: First frame for image-to-video, as a data: URL (PNG or JPEG).
    image: str | None = None
    seed: Int64 | None = None


class VideoOutput(msgspec.Struct, kw_only=True, gc=False):
    """A produced file."""

    url: str
    mime_type: str
    size_bytes: int


class VideoTaskError(msgspec.Struct, kw_only=True, gc=False):
    """Why a task failed."""

    message: str
    code: str | None


class VideoGeneration(msgspec.Struct, kw_only=True, gc=False):
    """An asynchronous video generation task."""

    id: str
    object: Literal["video.generation"] = "video.generation"
    model: str
    status: VideoStatus
    #: Percent.
    progress: int
    #: Unix seconds.
    created_at: int
    completed_at: int | None
    expires_at: int | UnsetType = UNSET
    prompt: str
    seconds: int
    size: str
    outputs: list[VideoOutput]
    #: The first output's URL, when there is one.
    url: str | None
    error: VideoTaskError | None
    #: Credits charged.
    cost: Credits


class VideoGenerationList(msgspec.Struct, kw_only=True, gc=False):
    """A page of the key's tasks, newest first."""

    object: Literal["list"] = "list"
    data: list[VideoGeneration]
    has_more: bool
    #: Pass as ``page_token`` for the next page.
    next_page_token: str | None
