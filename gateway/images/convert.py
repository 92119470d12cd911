"""Image JSON <-> protos."""

from __future__ import annotations

from msgspec import UNSET

from gateway.errors import ApiError
from gateway.images.schemas import ImageData, ImageGenerationRequest, ImagesResponse
from gateway.schemas import usage_from_proto
from gateway.urls import absolute_url
from raven.v1 import image_service_pb2

__all__ = ["images_from_proto", "images_request"]

_OPTIONAL = ("n", "size", "response_format", "quality", "style", "user", "seed")


def images_request(body: ImageGenerationRequest) -> image_service_pb2.GenerateImagesRequest:
    """The GenerateImagesRequest for a request body."""
    fields = {name: value for name in _OPTIONAL if (value := getattr(body, name)) is not None}
    try:
        return image_service_pb2.GenerateImagesRequest(model=body.model, prompt=body.prompt, **fields)
    except (ValueError, TypeError) as exc:
        raise ApiError(400, f"Invalid request: {exc}", code="invalid_value") from None


def images_from_proto(reply: image_service_pb2.GenerateImagesResponse, base_url: str) -> ImagesResponse:
    """The JSON response; file paths become absolute under ``base_url``."""
    data = [
        ImageData(
            b64_json=image.b64_json or UNSET,
            url=absolute_url(image.url, base_url) if image.url else UNSET,
            revised_prompt=image.revised_prompt or UNSET,
        )
        for image in reply.data
    ]
    return ImagesResponse(
        created=reply.created,
        data=data,
        id=reply.id,
        usage=usage_from_proto(reply.usage) if reply.HasField("usage") else UNSET,
    )
