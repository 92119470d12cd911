"""OpenTelemetry tracing, off by default: `otel_endpoint` (an OTLP/HTTP collector base URL such as
``http://127.0.0.1:4318``) turns it on.

What is traced (GenAI semantic conventions, https://opentelemetry.io/docs/specs/semconv/gen-ai/):
- one SERVER span per request (every raven.v1 RPC, REST requests included, since the gateway calls
  the same servicers), opened by `api/observe.py`, with the gateway's ``x-request-id`` as
  ``raven.request_id``, the model, the key id, the provider and the token counts of its usage record;
- one CLIENT span per upstream attempt (retries and fallbacks each get their own), opened by the
  provider wrappers below, which the composition root puts around every adapter: the router and
  the adapters know nothing of tracing.

Never on a span: a secret (client or upstream key), prompt or completion text, an upstream error
body (only the error class and Raven's code), a URL. The SDK and the exporter are imported only
when tracing is on; domain code never imports them (import-linter contract in pyproject).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode

from raven_service.core.errors import UpstreamError
from raven_service.core.types import ChatEvent, ChatResult, Finish, ProviderChatRequest, UsageReport

__all__ = ["TracedChatProvider", "TracedImageProvider", "Tracing", "traces_url"]


def traces_url(endpoint: str) -> str:
    """The OTLP/HTTP traces URL of a collector base URL (``.../v1/traces`` is kept as given)."""
    endpoint = endpoint.rstrip("/")
    return endpoint if endpoint.endswith("/v1/traces") else endpoint + "/v1/traces"


class Tracing:
    """The tracer provider of one service instance (not installed globally: each instance, and
    each test, has its own), exporting in batches over OTLP/HTTP (protobuf)."""

    def __init__(
        self,
        endpoint: str,
        service_name: str = "raven",
        *,
        exporter: SpanExporter | None = None,
        schedule_delay_ms: int = 1000,
    ) -> None:
        self.provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
        self.exporter = exporter or OTLPSpanExporter(endpoint=traces_url(endpoint), timeout=10)
        self.provider.add_span_processor(BatchSpanProcessor(self.exporter, schedule_delay_millis=schedule_delay_ms))
        self.tracer = self.provider.get_tracer("raven")

    def wrap_chat(self, providers: dict[str, Any]) -> dict[str, Any]:
        return {name: TracedChatProvider(p, self.tracer) for name, p in providers.items()}

    def wrap_images(self, providers: dict[str, Any]) -> dict[str, Any]:
        return {name: TracedImageProvider(p, self.tracer) for name, p in providers.items()}

    def shutdown(self) -> None:
        """Exports what is pending and stops (blocking: call it off the event loop)."""
        self.provider.shutdown()


def _attempt_attributes(provider: Any, operation: str, upstream_model: str) -> dict[str, Any]:
    name = getattr(provider, "name", "")
    return {
        "gen_ai.operation.name": operation,
        "gen_ai.provider.name": name,
        "gen_ai.system": name,  # the older name of gen_ai.provider.name, still read by many backends
        "gen_ai.request.model": upstream_model,
    }


def _request_attributes(req: ProviderChatRequest) -> dict[str, Any]:
    out: dict[str, Any] = {}
    r = req.request
    for attr, name in (
        ("max_tokens", "gen_ai.request.max_tokens"),
        ("temperature", "gen_ai.request.temperature"),
        ("top_p", "gen_ai.request.top_p"),
        ("seed", "gen_ai.request.seed"),
    ):
        value = getattr(r, attr, None)
        if value is not None:
            out[name] = value
    return out


def _failed(span: trace.Span, exc: BaseException) -> None:
    """Marks a failed attempt with Raven's classification only (no upstream body, no message)."""
    if isinstance(exc, UpstreamError):
        span.set_attribute("error.type", exc.code)
        span.set_attribute("raven.error.kind", exc.kind)
    else:
        span.set_attribute("error.type", type(exc).__name__)
    span.set_status(Status(StatusCode.ERROR))


class _Traced:
    """Delegates everything it does not trace to the wrapped adapter."""

    def __init__(self, inner: Any, tracer: trace.Tracer) -> None:
        self._inner = inner
        self._tracer = tracer
        self.name = inner.name

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._inner, attr)


class TracedChatProvider(_Traced):
    """A ChatProvider whose every call (one upstream attempt) is a CLIENT span."""

    def _start(self, req: ProviderChatRequest) -> trace.Span:
        attributes = _attempt_attributes(self._inner, "chat", req.upstream_model) | _request_attributes(req)
        return self._tracer.start_span(f"chat {req.upstream_model}", kind=SpanKind.CLIENT, attributes=attributes)

    async def complete(self, req: ProviderChatRequest) -> ChatResult:
        span = self._start(req)
        try:
            result: ChatResult = await self._inner.complete(req)
        except BaseException as exc:
            _failed(span, exc)
            raise
        else:
            span.set_attribute("gen_ai.usage.input_tokens", result.prompt_tokens)
            span.set_attribute("gen_ai.usage.output_tokens", result.completion_tokens)
            span.set_attribute("gen_ai.response.finish_reasons", [result.finish_reason])
            return result
        finally:
            span.end()

    async def stream(self, req: ProviderChatRequest) -> AsyncGenerator[ChatEvent, None]:
        span = self._start(req)
        events = self._inner.stream(req)
        first = True
        try:
            async for event in events:
                if first:
                    span.add_event("gen_ai.first_token")
                    first = False
                if isinstance(event, UsageReport):
                    span.set_attribute("gen_ai.usage.input_tokens", event.prompt_tokens)
                    span.set_attribute("gen_ai.usage.output_tokens", event.completion_tokens)
                elif isinstance(event, Finish):
                    span.set_attribute("gen_ai.response.finish_reasons", [event.reason])
                yield event
        except GeneratorExit:
            span.set_attribute("raven.closed_early", True)  # the router stopped reading (client gone)
            raise
        except BaseException as exc:
            _failed(span, exc)
            raise
        finally:
            await events.aclose()
            span.end()


class TracedImageProvider(_Traced):
    """An ImageProvider whose every call is a CLIENT span."""

    async def generate_images(self, upstream_model: str, req: Any) -> Any:
        attributes = _attempt_attributes(self._inner, "image_generation", upstream_model)
        span = self._tracer.start_span(
            f"image_generation {upstream_model}", kind=SpanKind.CLIENT, attributes=attributes
        )
        try:
            images = await self._inner.generate_images(upstream_model, req)
        except BaseException as exc:
            _failed(span, exc)
            raise
        else:
            span.set_attribute("raven.images", len(images))
            return images
        finally:
            span.end()
