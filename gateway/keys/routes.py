"""GET /v1/key (the calling key) and the admin routes /v1/keys (SPEC §11), onto KeyService."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, delete, get, patch, post
from litestar.params import FromPath, JSONBody, QueryParameter
from litestar.response import Response

from gateway.backend import backend_of, call_metadata, unary
from gateway.body import StrictJSON, check_depth, parse_body
from gateway.encoding import json_response
from gateway.keys.convert import create_request, key_object, key_self, update_request
from gateway.keys.schemas import (
    CreatedKey,
    KeyCreate,
    KeyData,
    KeyList,
    KeySelfResponse,
    KeyUpdate,
    RotatedKey,
    RotateIn,
)
from gateway.openapi import ERROR_RESPONSES
from raven.v1 import key_service_pb2

__all__ = ["KeyController", "KeysController"]



class KeyController(Controller):
    """The calling key."""

    path = "/key"
    tags = ["keys"]

    @get("", operation_id="GetKey", summary="The calling key", responses=ERROR_RESPONSES)
    async def get_key(self, request: Request[Any, Any, Any]) -> Response[KeySelfResponse]:
        """Limits, scopes, models, expiry, credits and budget (used, remaining, window reset) of the key."""
        reply: key_service_pb2.GetKeyResponse
        reply, headers = await unary(backend_of(request).keys.GetKey, key_service_pb2.GetKeyRequest(),
                                     call_metadata(request))
        return json_response(KeySelfResponse(data=key_self(reply.key)), headers)


class KeysController(Controller):
    """Key administration (admin scope)."""

    path = "/keys"
    tags = ["keys"]

    @post("", operation_id="CreateKey", summary="Create a key", dto=StrictJSON[KeyCreate], return_dto=None,
          status_code=201, responses=ERROR_RESPONSES)
    async def create_key(self, request: Request[Any, Any, Any], data: JSONBody[KeyCreate]) -> Response[CreatedKey]:
        """Create a key: its secret and webhook signing secret are shown only in this answer."""
        reply: key_service_pb2.CreateKeyResponse
        reply, headers = await unary(backend_of(request).keys.CreateKey, create_request(data), call_metadata(request))
        body = CreatedKey(key=key_object(reply.key), secret=reply.secret, webhook_secret=reply.webhook_secret)
        return json_response(body, headers, status_code=201)

    @get("", operation_id="ListKeys", summary="List keys", responses=ERROR_RESPONSES)
    async def list_keys(
        self,
        request: Request[Any, Any, Any],
        limit: Annotated[int, QueryParameter(ge=1, le=100, description="Page size (1 to 100).")] = 50,
        after: Annotated[str | None, QueryParameter(description="The `next` cursor of the previous page.")] = None,
        include_revoked: Annotated[bool, QueryParameter(description="Include revoked keys.")] = False,
    ) -> Response[KeyList]:
        """Keys in creation order, a page at a time (never their secrets)."""
        message = key_service_pb2.ListKeysRequest(limit=limit, after=after or "", include_revoked=include_revoked)
        reply: key_service_pb2.ListKeysResponse
        reply, headers = await unary(backend_of(request).keys.ListKeys, message, call_metadata(request))
        page = KeyList(data=[key_object(k) for k in reply.keys], has_more=reply.has_more, next=reply.next or None)
        return json_response(page, headers)

    @get("/{key_id:str}", operation_id="GetKeyById", summary="Retrieve a key", responses=ERROR_RESPONSES)
    async def get_key(self, request: Request[Any, Any, Any], key_id: FromPath[str]) -> Response[KeyData]:
        """One key by id."""
        reply: key_service_pb2.GetKeyByIdResponse
        reply, headers = await unary(backend_of(request).keys.GetKeyById, key_service_pb2.GetKeyByIdRequest(id=key_id),
                                     call_metadata(request))
        return json_response(KeyData(data=key_object(reply.key)), headers)

    @patch("/{key_id:str}", operation_id="UpdateKey", summary="Update a key", dto=StrictJSON[KeyUpdate],
           return_dto=None, responses=ERROR_RESPONSES)
    async def update_key(self, request: Request[Any, Any, Any], key_id: FromPath[str],
                         data: JSONBody[KeyUpdate]) -> Response[KeyData]:
        """Change any field; absent fields stay, null clears (credits, budget, expires_at, alert_webhook)."""
        reply: key_service_pb2.UpdateKeyResponse
        reply, headers = await unary(backend_of(request).keys.UpdateKey, update_request(key_id, data),
                                     call_metadata(request))
        return json_response(KeyData(data=key_object(reply.key)), headers)

    @delete("/{key_id:str}", operation_id="RevokeKey", summary="Revoke a key", status_code=200,
            responses=ERROR_RESPONSES)
    async def revoke_key(self, request: Request[Any, Any, Any], key_id: FromPath[str]) -> Response[KeyData]:
        """Revoke a key: later requests with it get 401."""
        reply: key_service_pb2.RevokeKeyResponse
        reply, headers = await unary(backend_of(request).keys.RevokeKey, key_service_pb2.RevokeKeyRequest(id=key_id),
                                     call_metadata(request))
        return json_response(KeyData(data=key_object(reply.key)), headers)

    @post("/{key_id:str}/rotate", operation_id="RotateKey", summary="Rotate a key's secret", status_code=200,
          responses=ERROR_RESPONSES)
    async def rotate_key(self, request: Request[Any, Any, Any], key_id: FromPath[str]) -> Response[RotatedKey]:
        """A new secret; the old one keeps working for `grace_seconds` (or `grace`, e.g. "2s"; default 24 h).
        The body (a RotateIn object) is optional."""
        raw = await request.body()
        body = RotateIn()
        if raw.strip():
            check_depth(raw)
            body = parse_body(raw, RotateIn)
        message = key_service_pb2.RotateKeyRequest(id=key_id)
        if not isinstance(body.grace_seconds, msgspec.UnsetType):
            message.grace_seconds = body.grace_seconds
        if not isinstance(body.grace, msgspec.UnsetType):
            message.grace = body.grace
        reply: key_service_pb2.RotateKeyResponse
        reply, headers = await unary(backend_of(request).keys.RotateKey, message, call_metadata(request))
        return json_response(RotatedKey(key=key_object(reply.key), secret=reply.secret), headers)
