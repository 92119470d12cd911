"""OpenAPI 3.1 document and docs page configuration, and the error responses every route documents."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from litestar import Request, get
from litestar.openapi import OpenAPIConfig, ResponseSpec
from litestar.openapi.plugins import JsonRenderPlugin, SwaggerRenderPlugin
from litestar.openapi.spec import (
    Components,
    OpenAPIMediaType,
    OpenAPIResponse,
    OpenAPIType,
    Operation,
    Schema,
    SecurityRequirement,
    SecurityScheme,
)
from litestar.response import Response

from gateway.docs_assets import CSS_URL, FAVICON, JS_URL, PRESET_URL
from gateway.encoding import encode
from gateway.errors import ErrorResponse

__all__ = ["BEARER", "ERROR_RESPONSES", "openapi_config", "openapi_json"]

#: The security requirement of every /v1 route.
BEARER: Final[list[SecurityRequirement]] = [{"bearerAuth": []}]

_ERRORS: Final = {
    400: "Malformed JSON, wrong JSON types, or a value the service rejects (OpenAI error body).",
    401: "Missing, invalid or revoked API key.",
    402: "The key has no credits left.",
    403: "The key may not do this.",
    404: "Unknown model, task, file or generation (or one owned by another key).",
    413: "The request body is too large.",
    429: "Rate or concurrency limit exceeded; see Retry-After.",
    500: "Internal error.",
    502: "Upstream provider error after fallbacks, or the service is unavailable.",
    504: "Upstream timeout.",
}

#: ``responses=`` of every /v1 route: all errors share the OpenAI error body.
ERROR_RESPONSES: Final[dict[int, ResponseSpec]] = {
    status: ResponseSpec(data_container=ErrorResponse, description=text, generate_examples=False)
    for status, text in _ERRORS.items()
}

_DESCRIPTION = (
    "OpenAI-compatible API of Raven. Authenticate every /v1 request with "
    "`Authorization: Bearer <API_KEY>`. Errors use the OpenAI body "
    '`{"error": {"message", "type", "code", "param"}}`.'
)


def openapi_config() -> OpenAPIConfig:
    """The OpenAPI configuration: interactive docs at ``/docs`` (schema also at ``/docs/openapi.json``).

    The docs live under ``/docs`` rather than ``/`` because Litestar adds a catch-all
    ``{path}`` handler next to them, which at the root would shadow unknown-URL 404s;
    ``/openapi.json`` is served by :func:`openapi_json`.
    """
    return OpenAPIConfig(
        title="Raven",
        version="1.0.0",
        description=_DESCRIPTION,
        path="/docs",
        render_plugins=[
            # Assets from the gateway itself (gateway/docs_assets.py): the page works offline.
            SwaggerRenderPlugin(
                path="/", js_url=JS_URL, css_url=CSS_URL, standalone_preset_js_url=PRESET_URL, favicon=FAVICON
            ),
            JsonRenderPlugin(path="/openapi.json"),
        ],
        components=Components(
            security_schemes={
                "bearerAuth": SecurityScheme(type="http", scheme="bearer", description="An API key: rk-...")
            }
        ),
        use_handler_docstrings=True,
    )


@get("/openapi.json", include_in_schema=False, sync_to_thread=False, media_type="application/json")
def openapi_json(request: Request[Any, Any, Any]) -> Response[bytes]:
    """The OpenAPI 3.1 document (rendered once per app)."""
    state = request.app.state
    document: bytes | None = getattr(state, "openapi_document", None)
    if document is None:
        document = encode(request.app.openapi_schema.to_schema())
        state.openapi_document = document
    return Response(document, media_type="application/json")


def streaming_operation(sse_description: str) -> type[Operation]:
    """An `operation_class` documenting that the route's 200 may also be ``text/event-stream``
    (the streaming dialects: chat, messages, responses), with `sse_description` as its schema."""

    @dataclass
    class StreamingOperation(Operation):
        def __post_init__(self) -> None:
            ok = (self.responses or {}).get("200")
            if isinstance(ok, OpenAPIResponse) and ok.content is not None:
                ok.content["text/event-stream"] = OpenAPIMediaType(
                    schema=Schema(type=OpenAPIType.STRING, description=sse_description)
                )

    return StreamingOperation
