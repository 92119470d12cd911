"""POST /v1/responses (unary JSON or the Responses SSE events), GET and DELETE /v1/responses/{id}, and
GET /v1/responses/{id}/input_items.

A response is a chat completion (ChatService: the same admission, routing, limits, usage and
credits as /v1/chat/completions) translated to and from the Responses dialect; with ``store``
(the default) it is kept through ResponseService, which also answers ``previous_response_id``
and GET, per key.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Annotated, Any, Final

import grpc
from litestar import Controller, Request, delete, get, post
from litestar.params import FromPath, JSONBody, QueryParameter
from litestar.response import Response, Stream

from gateway.backend import DEADLINE, backend_of, call_metadata, settings_of, unary
from gateway.body import StrictJSON
from gateway.encoding import encode
from gateway.errors import ApiError, forwarded_headers
from gateway.openapi import ERROR_RESPONSES, streaming_operation
from gateway.responses.convert import (
    ResponseTranslator,
    chat_request,
    history_items,
    input_items,
    listed_item,
    request_echo,
    response_from_completion,
    with_item_ids,
)
from gateway.responses.schemas import ResponsesRequest
from gateway.sse import END, KEEPALIVE, EventStream, RpcStream, open_stream
from raven.v1 import chat_service_pb2, response_service_pb2

__all__ = ["ResponsesController"]

logger = logging.getLogger("raven.gateway")

SSE_HEADERS: Final = {"content-type": "text/event-stream", "cache-control": "no-cache", "x-accel-buffering": "no"}

_DESCRIPTION = (
    "The OpenAI Responses API, served by the chat domain. `input` is a text or a list of items (messages, "
    "`function_call`, `function_call_output`, `reasoning`); function tools are served, other tool types "
    "are ignored. With `\"stream\": true` the response is `text/event-stream` with the Responses events "
    "(`response.created`, `response.output_item.added`, `response.output_text.delta`, "
    "`response.function_call_arguments.delta`, `response.output_item.done`, `response.completed` with "
    "usage; `response.failed` on a failure after the stream started). `store` (default true) keeps the "
    "response for 30 days for `GET /v1/responses/{id}` and `previous_response_id`, for the same key only."
)


def _json(body: bytes | str, headers: dict[str, str]) -> Response[Any]:
    return Response(content=body, status_code=200, headers=headers, media_type="application/json")


class ResponsesController(Controller):
    """The Responses API."""

    path = "/responses"
    tags = ["responses"]

    @post(
        "",
        operation_id="CreateResponse",
        summary="Create a model response",
        description=_DESCRIPTION,
        dto=StrictJSON[ResponsesRequest],
        return_dto=None,
        status_code=200,
        responses=ERROR_RESPONSES,
        operation_class=streaming_operation("SSE: Responses API semantic events, each with its sequence_number."),
    )
    async def create_response(
        self, request: Request[Any, Any, Any], data: JSONBody[ResponsesRequest]
    ) -> Response[dict[str, Any]]:
        """Create a response (``stream: true`` answers with the Responses SSE events)."""
        metadata = call_metadata(request)
        backend = backend_of(request)
        history: list[Any] = []
        if data.previous_response_id is not None:
            history = await _history(request, data.previous_response_id, metadata)
        echo = request_echo(data)
        store = data.store is not False
        if data.stream:
            return await _stream(request, data, history, echo, store, metadata)  # type: ignore[return-value]
        message = chat_request(data, history, chat_service_pb2.CreateChatCompletionRequest)
        reply: chat_service_pb2.CreateChatCompletionResponse
        reply, headers = await unary(backend.chat.CreateChatCompletion, message, metadata)
        response = response_from_completion(reply, echo)
        body = encode(response)
        if store:
            await _put(request, response, history, input_items(data), metadata)
        return _json(body, headers)

    @get(
        "/{response_id:str}",
        operation_id="GetResponse",
        summary="Retrieve a stored response",
        description="A response created with `store` (the default) by the same key, for 30 days; 404 otherwise.",
        status_code=200,
        responses=ERROR_RESPONSES,
    )
    async def get_response(
        self, request: Request[Any, Any, Any], response_id: FromPath[str]
    ) -> Response[dict[str, Any]]:
        """Retrieve a stored response."""
        reply: response_service_pb2.GetResponseResponse
        reply, headers = await unary(backend_of(request).responses.GetResponse,
                                     response_service_pb2.GetResponseRequest(id=response_id), call_metadata(request))
        return _json(reply.response.body, headers)


    @delete(
        "/{response_id:str}",
        operation_id="DeleteResponse",
        summary="Delete a stored response",
        description="Deletes a response the same key stored: it can no longer be retrieved nor continued from "
                    "with `previous_response_id`; 404 for unknown, expired and other keys' ids.",
        status_code=200,
        responses=ERROR_RESPONSES,
    )
    async def delete_response(
        self, request: Request[Any, Any, Any], response_id: FromPath[str]
    ) -> Response[dict[str, Any]]:
        """Delete a stored response."""
        reply: response_service_pb2.DeleteResponseResponse
        reply, headers = await unary(backend_of(request).responses.DeleteResponse,
                                     response_service_pb2.DeleteResponseRequest(id=response_id),
                                     call_metadata(request))
        return _json(encode({"id": reply.id, "object": "response", "deleted": reply.deleted}), headers)

    @get(
        "/{response_id:str}/input_items",
        operation_id="ListResponseInputItems",
        summary="List a stored response's input items",
        description="The whole input the response was generated from (the items of its `previous_response_id` "
                    "chain first), newest first unless `order=asc`; pages of `limit` items, the next one "
                    "`after` the last id of this one.",
        status_code=200,
        responses=ERROR_RESPONSES,
    )
    async def list_input_items(
        self, request: Request[Any, Any, Any], response_id: FromPath[str],
        limit: Annotated[int, QueryParameter(ge=1, le=100, description="Items per page, 1 to 100 (default 20).")] = 20,
        order: Annotated[str, QueryParameter(description="`desc` (default) or `asc`.")] = "desc",
        after: Annotated[str | None, QueryParameter(description="An item id: list the items after it.")] = None,
        include: Annotated[list[str] | None, QueryParameter(name="include[]", description="Accepted; "
                                                            "items are returned whole.")] = None,
    ) -> Response[dict[str, Any]]:
        """List the input items of a stored response."""
        reply: response_service_pb2.ListResponseInputItemsResponse
        reply, headers = await unary(
            backend_of(request).responses.ListResponseInputItems,
            response_service_pb2.ListResponseInputItemsRequest(id=response_id, limit=limit, order=order,
                                                               after=after or ""),
            call_metadata(request))
        data = [listed_item(json.loads(item)) for item in reply.items]
        return _json(encode({"object": "list", "data": data, "first_id": reply.first_id or None,
                             "last_id": reply.last_id or None, "has_more": reply.has_more}), headers)


async def _history(request: Request[Any, Any, Any], previous_id: str,
                   metadata: tuple[tuple[str, str], ...]) -> list[Any]:
    """The items the previous response continues from (404 naming previous_response_id)."""
    try:
        reply: response_service_pb2.GetResponseResponse
        reply, _ = await unary(backend_of(request).responses.GetResponse,
                               response_service_pb2.GetResponseRequest(id=previous_id), metadata)
    except grpc.aio.AioRpcError as exc:
        error = ApiError.from_rpc_error(exc)
        if error.status_code == 404:
            shown = previous_id if len(previous_id) <= 80 else previous_id[:80] + "..."
            raise ApiError(404, f"Previous response with id '{shown}' not found.", code="previous_response_not_found",
                           param="previous_response_id", headers=error.headers) from None
        raise error from None
    return history_items(reply.response.input_items, reply.response.body)


async def _put(request: Request[Any, Any, Any], response: dict[str, Any], history: list[Any], own: list[Any],
               metadata: tuple[tuple[str, str], ...]) -> None:
    """Stores the response with its whole input: the chain's items, then this request's own (given ids)."""
    items = [*history, *with_item_ids(own, response["id"])]
    stored = response_service_pb2.StoredResponse(id=response["id"], model=response["model"],
                                                 body=encode(response).decode(), input_items=json.dumps(items))
    stored.create_time.FromSeconds(int(response["created_at"]))
    await unary(backend_of(request).responses.PutResponse, response_service_pb2.PutResponseRequest(response=stored),
                metadata)


async def _stream(request: Request[Any, Any, Any], data: ResponsesRequest, history: list[Any],
                  echo: dict[str, Any], store: bool, metadata: tuple[tuple[str, str], ...]) -> Stream:
    """Start the stream; a failure before its first message is a real HTTP error."""
    keepalive = settings_of(request).keepalive_interval
    message = chat_request(data, history, chat_service_pb2.StreamChatCompletionRequest)
    call = backend_of(request).chat.StreamChatCompletion(message, metadata=metadata, timeout=DEADLINE[0])
    stream: RpcStream[chat_service_pb2.StreamChatCompletionResponse]
    stream, first = await open_stream(call, keepalive)
    headers = forwarded_headers(stream.initial_metadata)
    headers.update(SSE_HEADERS)
    events = _events(request, stream, first, ResponseTranslator(echo), keepalive,
                     (history, input_items(data)) if store else None, metadata)
    return EventStream(events, headers=headers, media_type="text/event-stream")


async def _events(request: Request[Any, Any, Any], stream: RpcStream[chat_service_pb2.StreamChatCompletionResponse],
                  first: list[Any] | None, translator: ResponseTranslator, keepalive: float,
                  store_items: tuple[list[Any], list[Any]] | None,
                  metadata: tuple[tuple[str, str], ...]) -> AsyncIterator[bytes]:
    """The Responses events of the stream; the final response is stored before it is announced.

    Whatever ends the generator (end, failure, client disconnect) cancels the gRPC call.
    """
    try:
        batch = first
        while True:
            if batch is None:
                yield KEEPALIVE
            else:
                frames: list[bytes] = []
                finished = False
                for item in batch:
                    if item is END or isinstance(item, BaseException):
                        finished = True
                        if not translator.ended:
                            failure = item if isinstance(item, BaseException) else RuntimeError("stream ended early")
                            frames.append(translator.fail(failure))
                        break
                    if translator.ended:
                        continue  # nothing follows the final response (the call's status is awaited)
                    try:
                        frames.extend(translator.feed(item))
                    except Exception as exc:  # a translation bug must still end the stream properly
                        frames.append(translator.fail(exc))
                        finished = True
                        break
                    if translator.final is not None and not translator.ended:
                        if store_items is not None:
                            try:
                                await _put(request, translator.final, *store_items, metadata)
                            except (grpc.aio.AioRpcError, ApiError) as exc:
                                logger.warning("storing response %s failed: %s", translator.rid, exc)
                        frames.append(translator.completed())
                if frames:
                    yield b"".join(frames)
                if finished:
                    return
            batch = await stream.next_batch(keepalive)
    finally:
        stream.cancel()
