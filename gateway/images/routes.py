"""POST /v1/images/generations over ImageService."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, post
from litestar.params import JSONBody
from litestar.response import Response

from gateway.backend import backend_of, call_metadata, unary
from gateway.body import StrictJSON
from gateway.encoding import json_response
from gateway.images.convert import images_from_proto, images_request
from gateway.images.schemas import ImageGenerationRequest, ImagesResponse
from gateway.openapi import ERROR_RESPONSES
from gateway.urls import public_base_url
from raven.v1 import image_service_pb2

__all__ = ["ImagesController"]


class ImagesController(Controller):
    """Text-to-image generation."""

    path = "/images/generations"
    tags = ["images"]

    @post(
        "",
        operation_id="CreateImage",
        summary="Generate images",
        dto=StrictJSON[ImageGenerationRequest],
        return_dto=None,
        status_code=200,
        responses=ERROR_RESPONSES,
    )
    async def create_image(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[ImageGenerationRequest],
    ) -> Response[ImagesResponse]:
        """Generate ``n`` images for a prompt (``b64_json`` or absolute ``url`` outputs)."""
        images = backend_of(request).images
        reply: image_service_pb2.GenerateImagesResponse
        reply, headers = await unary(images.GenerateImages, images_request(data), call_metadata(request))
        return json_response(images_from_proto(reply, public_base_url(request)), headers)
