"""One observation per RPC: the request span (when tracing is on) and the JSON access-log line
(when `access_log` is on), for every raven.v1 call, on the gRPC port and on the in-process channel
the co-located REST gateway uses alike.

The composition root wraps each method handler once (`RequestObserver.wrap`). The wrapper keeps a
`CallInfo` in a context variable for the duration of the call; two hooks fill it without any use
case knowing: `note_principal` (called by `api/context.authenticate`) gives the key id, and
`note_record` (the ledger's observer: every admitted request submits exactly one usage record,
synchronously, inside the call) gives the model, provider, tokens, status and generation id.

Logged / traced: the gateway's ``x-request-id``, the RPC, key id, model, provider, tokens, usage
status, gRPC code, latency. Never: the authorization metadata, prompt or completion text, an error
message (the code only).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import grpc

from raven_service.core.types import Principal, UsageRecord

__all__ = ["ACCESS_LOG", "CallInfo", "RequestObserver", "note_principal", "note_record"]

#: The logger of the access lines (one JSON object per line; configured by the composition root).
ACCESS_LOG = logging.getLogger("raven.access")
_PID = os.getpid()

#: RPC method (last path part) -> gen_ai.operation.name.
_OPERATIONS = {
    "CreateChatCompletion": "chat",
    "StreamChatCompletion": "chat",
    "GenerateImages": "image_generation",
    "CreateVideoGeneration": "video_generation",
    "CreateEmbeddings": "embeddings",
}


@dataclass(slots=True)
class CallInfo:
    """What one RPC learned about itself while it ran."""

    method: str
    request_id: str
    model: str = ""
    key_id: str = ""
    record: UsageRecord | None = None


_CURRENT: ContextVar[CallInfo | None] = ContextVar("raven_current_call", default=None)


def note_principal(principal: Principal) -> None:
    """The authenticated caller of the current RPC (no-op outside an observed call)."""
    info = _CURRENT.get()
    if info is not None:
        info.key_id = principal.key_id


def note_record(rec: UsageRecord) -> None:
    """The usage record the current RPC settled (the first one, if a call settles several)."""
    info = _CURRENT.get()
    if info is not None and info.record is None:
        info.record = rec


def _metadata_value(metadata: Any, name: str) -> str:
    for key, value in metadata or ():
        if key == name and isinstance(value, str):
            return value[:200]
    return ""


def _request_model(message: Any) -> str:
    """The `model` a request names (top level or in its `params`), "" when it names none."""
    try:
        fields = message.DESCRIPTOR.fields_by_name
    except AttributeError:
        return ""
    if "model" in fields and isinstance(message.model, str):
        return str(message.model)[:200]
    if "params" in fields:
        params = message.params
        if "model" in params.DESCRIPTOR.fields_by_name:
            return str(params.model)[:200]
    return ""


def _code_of(exc: BaseException | None, context: Any) -> str:
    """The gRPC status code name an RPC ended with."""
    if exc is None:
        return "OK"
    code = getattr(exc, "code", None)  # the in-process channel's abort carries its code
    if isinstance(code, grpc.StatusCode):
        return code.name
    try:
        ctx_code = context.code()
    except Exception:
        ctx_code = None
    if isinstance(ctx_code, grpc.StatusCode) and ctx_code is not grpc.StatusCode.OK:
        return ctx_code.name
    if isinstance(exc, BaseException) and type(exc).__name__ == "CancelledError":
        return "CANCELLED"
    return "UNKNOWN"


class RequestObserver:
    """Wraps method handlers with the per-call span and access-log line (see the module doc)."""

    def __init__(
        self, *, tracer: Any = None, access_log: bool = False, clock: Callable[[], float] = time.perf_counter
    ) -> None:
        self._tracer = tracer
        self._log = access_log
        self._clock = clock

    @property
    def enabled(self) -> bool:
        return self._tracer is not None or self._log

    # ---------------------------------------------------------------------------- one call
    def _begin(self, method: str, request: Any, context: Any) -> tuple[CallInfo, Any, Any]:
        info = CallInfo(
            method=method,
            request_id=_metadata_value(context.invocation_metadata(), "x-request-id"),
            model=_request_model(request),
        )
        token = _CURRENT.set(info)
        span = otel_token = None
        if self._tracer is not None:
            from opentelemetry import context as otel_context
            from opentelemetry import trace

            rpc_service, _, rpc_method = method.lstrip("/").partition("/")
            operation = _OPERATIONS.get(rpc_method, "")
            attributes: dict[str, Any] = {"rpc.system": "grpc", "rpc.service": rpc_service, "rpc.method": rpc_method}
            if operation:
                attributes["gen_ai.operation.name"] = operation
            if info.request_id:
                attributes["raven.request_id"] = info.request_id
            if info.model:
                attributes["gen_ai.request.model"] = info.model
            name = f"{operation} {info.model}" if operation and info.model else method.lstrip("/")
            span = self._tracer.start_span(name, kind=trace.SpanKind.SERVER, attributes=attributes)
            otel_token = otel_context.attach(trace.set_span_in_context(span))
        return info, (token, otel_token), span

    def _end(self, info: CallInfo, tokens: tuple[Any, Any], span: Any, started: float, code: str) -> None:
        latency_ms = round((self._clock() - started) * 1000, 3)
        rec = info.record
        token, otel_token = tokens
        try:
            _CURRENT.reset(token)
        except ValueError:  # ended in another context (a generator closed elsewhere): nothing to undo
            pass
        if span is not None:
            from opentelemetry import context as otel_context
            from opentelemetry.trace import Status, StatusCode

            if otel_token is not None:
                try:
                    otel_context.detach(otel_token)
                except ValueError:
                    pass
            if info.key_id:
                span.set_attribute("raven.key_id", info.key_id)
            span.set_attribute("rpc.grpc.status_code", code)
            if rec is not None:
                span.set_attribute("gen_ai.response.id", rec.id)
                span.set_attribute("gen_ai.request.model", rec.model)
                if rec.provider:
                    span.set_attribute("gen_ai.provider.name", rec.provider)
                    span.set_attribute("gen_ai.system", rec.provider)
                if rec.upstream_model:
                    span.set_attribute("gen_ai.response.model", rec.upstream_model)
                span.set_attribute("gen_ai.usage.input_tokens", rec.prompt_tokens)
                span.set_attribute("gen_ai.usage.output_tokens", rec.completion_tokens)
                span.set_attribute("raven.usage.status", rec.status)
                span.set_attribute("raven.usage.cost", f"{rec.cost.normalize():f}")
                if rec.finish_reason:
                    span.set_attribute("gen_ai.response.finish_reasons", [rec.finish_reason])
            if code != "OK" or (rec is not None and rec.status == "failed"):
                span.set_status(Status(StatusCode.ERROR))
                span.set_attribute("error.type", code if code != "OK" else "failed")
            span.end()
        if self._log:
            line: dict[str, Any] = {
                "ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "log": "rpc",
                "request_id": info.request_id,
                "rpc": info.method,
                "key_id": info.key_id or (rec.key_id if rec is not None else ""),
                "model": rec.model if rec is not None else info.model,
                "provider": rec.provider if rec is not None else "",
                "status": rec.status if rec is not None else ("completed" if code == "OK" else "failed"),
                "grpc_code": code,
                "latency_ms": latency_ms,
                "pid": _PID,
            }
            if rec is not None:
                line.update(
                    generation_id=rec.id,
                    prompt_tokens=rec.prompt_tokens,
                    completion_tokens=rec.completion_tokens,
                    cost=f"{rec.cost.normalize():f}",
                )
            ACCESS_LOG.info(json.dumps(line, separators=(",", ":")))

    # ---------------------------------------------------------------------------- wrappers
    def _unary(self, method: str, inner: Callable[[Any, Any], Awaitable[Any]]) -> Callable[[Any, Any], Awaitable[Any]]:
        async def behavior(request: Any, context: Any) -> Any:
            started = self._clock()
            info, tokens, span = self._begin(method, request, context)
            error: BaseException | None = None
            try:
                return await inner(request, context)
            except BaseException as exc:
                error = exc
                raise
            finally:
                self._end(info, tokens, span, started, _code_of(error, context))

        return behavior

    def _stream(self, method: str, inner: Callable[[Any, Any], AsyncIterator[Any]]) -> Callable[[Any, Any], Any]:
        async def behavior(request: Any, context: Any) -> AsyncIterator[Any]:
            started = self._clock()
            info, tokens, span = self._begin(method, request, context)
            error: BaseException | None = None
            try:
                async for message in inner(request, context):
                    yield message
            except BaseException as exc:
                error = exc
                raise
            finally:
                self._end(info, tokens, span, started, _code_of(error, context))

        return behavior

    def wrap(self, method: str, handler: Any) -> Any:
        """The handler with the observation around it (unchanged when observing is off)."""
        if not self.enabled or handler is None or handler.request_streaming:
            return handler
        if handler.response_streaming:
            return handler._replace(unary_stream=self._stream(method, handler.unary_stream))
        return handler._replace(unary_unary=self._unary(method, handler.unary_unary))

    def wrap_registry(self, handlers: dict[str, Any]) -> None:
        """Wraps every handler of an in-process registry (`api/inproc.HandlerRegistry.handlers`)."""
        for method, handler in list(handlers.items()):
            if not method.startswith("/grpc."):
                handlers[method] = self.wrap(method, handler)

    def interceptor(self) -> ObservingInterceptor:
        return ObservingInterceptor(self)


class ObservingInterceptor(grpc.aio.ServerInterceptor):
    """The same observation on the network gRPC server (handlers wrapped once per method)."""

    def __init__(self, observer: RequestObserver) -> None:
        self._observer = observer
        self._wrapped: dict[str, tuple[Any, Any]] = {}

    async def intercept_service(self, continuation: Any, handler_call_details: Any) -> Any:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or method.startswith("/grpc."):
            return handler
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = self._observer.wrap(method, handler)
        self._wrapped[method] = (handler, wrapped)
        return wrapped
