"""ResponseService servicer: stored Responses API responses (proto <-> domain)."""

from __future__ import annotations

import grpc

from raven.v1 import response_service_pb2, response_service_pb2_grpc
from raven_service.api import convert
from raven_service.api.context import unary_call
from raven_service.app.admission import Admitter
from raven_service.app.responses import ResponseUseCase
from raven_service.core.types import Principal, StoredResponse
from raven_service.policy.auth import Authenticator

__all__ = ["ResponseServicer"]


def _proto(r: StoredResponse) -> response_service_pb2.StoredResponse:
    return response_service_pb2.StoredResponse(
        id=r.id, model=r.model, body=r.body, input_items=r.input_items,
        create_time=convert.timestamp(r.created_at), expire_time=convert.timestamp(r.expires_at),
    )


class ResponseServicer(response_service_pb2_grpc.ResponseServiceServicer):
    def __init__(self, auth: Authenticator, responses: ResponseUseCase, admitter: Admitter) -> None:
        self._auth = auth
        self._responses = responses
        self._admitter = admitter

    @unary_call
    async def PutResponse(self, request: response_service_pb2.PutResponseRequest, context: grpc.aio.ServicerContext,
                          principal: Principal) -> response_service_pb2.PutResponseResponse:
        pb = request.response
        created = pb.create_time.ToNanoseconds() / 1e9 if pb.HasField("create_time") else 0.0
        stored = await self._responses.put(principal, StoredResponse(
            id=pb.id, key_id=principal.key_id, model=pb.model, body=pb.body, input_items=pb.input_items or "[]",
            created_at=created))
        return response_service_pb2.PutResponseResponse(response=_proto(stored))

    @unary_call
    async def GetResponse(self, request: response_service_pb2.GetResponseRequest, context: grpc.aio.ServicerContext,
                          principal: Principal) -> response_service_pb2.GetResponseResponse:
        found = await self._responses.get(principal, request.id)
        return response_service_pb2.GetResponseResponse(response=_proto(found))

    @unary_call
    async def DeleteResponse(self, request: response_service_pb2.DeleteResponseRequest,
                             context: grpc.aio.ServicerContext,
                             principal: Principal) -> response_service_pb2.DeleteResponseResponse:
        await self._responses.delete(principal, request.id)
        return response_service_pb2.DeleteResponseResponse(id=request.id, deleted=True)

    @unary_call
    async def ListResponseInputItems(self, request: response_service_pb2.ListResponseInputItemsRequest,
                                     context: grpc.aio.ServicerContext,
                                     principal: Principal) -> response_service_pb2.ListResponseInputItemsResponse:
        page = await self._responses.input_items(principal, request.id, limit=request.limit, order=request.order,
                                                 after=request.after)
        return response_service_pb2.ListResponseInputItemsResponse(
            items=[item.decode() for item in page.items], first_id=page.first_id, last_id=page.last_id,
            has_more=page.has_more)
