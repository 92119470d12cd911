"""Model protos -> JSON."""

from __future__ import annotations

from msgspec import UNSET

from gateway.models.schemas import Model, Pricing
from raven.v1 import model_pb2

__all__ = ["model_from_proto"]


def model_from_proto(model: model_pb2.Model) -> Model:
    """The JSON model object of a proto Model."""
    pricing = model.pricing
    return Model(
        id=model.id,
        created=model.created,
        owned_by=model.owned_by,
        capabilities=list(model.capabilities),
        context_length=model.context_length,
        pricing=Pricing(
            prompt=pricing.prompt or "0",
            completion=pricing.completion or "0",
            image=pricing.image or UNSET,
            video_second=pricing.video_second or UNSET,
        ),
        supported_parameters=list(model.supported_parameters),
        description=model.description,
    )
