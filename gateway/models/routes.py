"""GET /v1/models and GET /v1/models/{id} (ids may contain "/", raw or %2F-encoded)."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, get
from litestar.params import FromPath, QueryParameter
from litestar.response import Response

from gateway.backend import backend_of, call_metadata, unary
from gateway.encoding import json_response
from gateway.models.convert import model_from_proto
from gateway.models.schemas import Model, ModelList
from gateway.openapi import ERROR_RESPONSES
from raven.v1 import model_service_pb2

__all__ = ["ModelsController"]


class ModelsController(Controller):
    """The model catalogue visible to the key."""

    path = "/models"
    tags = ["models"]

    @get("", operation_id="ListModels", summary="List models", responses=ERROR_RESPONSES)
    async def list_models(
        self,
        request: Request[Any, Any, Any],
        capability: Annotated[
            str | None, QueryParameter(description="Only models with this capability (chat, images, ...).")
        ] = None,
    ) -> Response[ModelList]:
        """List the models the key can use."""
        message = model_service_pb2.ListModelsRequest(capability=capability or "")
        reply: model_service_pb2.ListModelsResponse
        reply, headers = await unary(backend_of(request).models.ListModels, message, call_metadata(request))
        return json_response(ModelList(data=[model_from_proto(m) for m in reply.models]), headers)

    @get("/{model_id:path}", operation_id="GetModel", summary="Retrieve a model", responses=ERROR_RESPONSES)
    async def get_model(self, request: Request[Any, Any, Any], model_id: FromPath[str]) -> Response[Model]:
        """Retrieve one model by its slug (which may contain "/")."""
        message = model_service_pb2.GetModelRequest(id=model_id.lstrip("/"))
        reply: model_service_pb2.GetModelResponse
        reply, headers = await unary(backend_of(request).models.GetModel, message, call_metadata(request))
        return json_response(model_from_proto(reply.model), headers)
