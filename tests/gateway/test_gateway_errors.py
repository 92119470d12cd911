"""Error translation: gRPC status -> HTTP + OpenAI body, and request validation (never a 500)."""

from __future__ import annotations

from typing import Any

import grpc
import httpx
import openai
import pytest
from gateway_fakes import FakeService, abort
from litestar import Litestar

from gateway import GatewaySettings, create_app

CHAT = "/v1/chat/completions"
GOOD = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
ERROR_KEYS = {"message", "type", "code", "param"}


def scripted_abort(code: grpc.StatusCode, message: str, **details: Any) -> Any:
    async def handler(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await abort(context, code, message, **details)

    return handler


@pytest.mark.parametrize(
    ("code", "details", "status", "error_type", "error_code", "error_class"),
    [
        (
            grpc.StatusCode.INVALID_ARGUMENT,
            {"reason": "INVALID_REQUEST", "field": "temperature"},
            400,
            "invalid_request_error",
            "invalid_request",
            openai.BadRequestError,
        ),
        (
            grpc.StatusCode.UNAUTHENTICATED,
            {"reason": "INVALID_API_KEY"},
            401,
            "authentication_error",
            "invalid_api_key",
            openai.AuthenticationError,
        ),
        (
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            {"reason": "INSUFFICIENT_CREDITS"},
            402,
            "insufficient_quota",
            "insufficient_credits",
            openai.APIStatusError,
        ),
        (
            grpc.StatusCode.PERMISSION_DENIED,
            {"reason": "PERMISSION_DENIED"},
            403,
            "permission_error",
            "permission_denied",
            openai.PermissionDeniedError,
        ),
        (
            grpc.StatusCode.NOT_FOUND,
            {"reason": "MODEL_NOT_FOUND"},
            404,
            "invalid_request_error",
            "model_not_found",
            openai.NotFoundError,
        ),
        (grpc.StatusCode.ALREADY_EXISTS, {}, 409, "invalid_request_error", None, openai.ConflictError),
        (grpc.StatusCode.FAILED_PRECONDITION, {}, 400, "invalid_request_error", None, openai.BadRequestError),
        (
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            {"reason": "PAYLOAD_TOO_LARGE"},
            413,
            "invalid_request_error",
            "payload_too_large",
            openai.APIStatusError,
        ),
        (
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            {"reason": "RATE_LIMIT_EXCEEDED", "retry_after": 1.2},
            429,
            "rate_limit_error",
            "rate_limit_exceeded",
            openai.RateLimitError,
        ),
        (
            grpc.StatusCode.UNAVAILABLE,
            {"reason": "UPSTREAM_ERROR"},
            502,
            "api_error",
            "upstream_error",
            openai.InternalServerError,
        ),
        (
            grpc.StatusCode.DEADLINE_EXCEEDED,
            {"reason": "UPSTREAM_TIMEOUT"},
            504,
            "api_error",
            "upstream_timeout",
            openai.InternalServerError,
        ),
        (grpc.StatusCode.UNIMPLEMENTED, {}, 501, "api_error", "not_implemented", openai.InternalServerError),
    ],
)
async def test_status_table_through_the_sdk(
    client: openai.AsyncOpenAI,
    fake: FakeService,
    code: grpc.StatusCode,
    details: dict[str, Any],
    status: int,
    error_type: str,
    error_code: str | None,
    error_class: type[openai.APIStatusError],
) -> None:
    fake.chat.unary = scripted_abort(code, "Scripted failure.", **details)
    with pytest.raises(error_class) as raised:
        await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
    error = raised.value
    assert error.status_code == status
    assert error.code == error_code
    assert error.type == error_type
    assert error.param == details.get("field")
    body = error.response.json()
    assert set(body["error"]) == ERROR_KEYS
    assert body["error"]["message"] == "Scripted failure."
    assert error.response.headers["x-ratelimit-remaining-requests"] == "59"
    if status == 429:
        assert error.response.headers["retry-after"] == "2"


async def test_internal_errors_never_leak(http: httpx.AsyncClient, fake: FakeService) -> None:
    leaky = "db password=hunter2 at 10.0.0.3"
    fake.chat.unary = scripted_abort(grpc.StatusCode.INTERNAL, leaky, reason="INTERNAL_ERROR")
    response = await http.post(CHAT, json=GOOD)
    assert response.status_code == 500
    error = response.json()["error"]
    assert error["type"] == "api_error"
    assert "hunter2" not in response.text
    assert error["code"] == "internal_error"


async def test_servicer_exception_is_generic_500(http: httpx.AsyncClient, fake: FakeService) -> None:
    async def crash(request: Any, context: grpc.aio.ServicerContext) -> Any:
        raise RuntimeError("secret stack detail")

    fake.chat.unary = crash
    response = await http.post(CHAT, json=GOOD)
    assert response.status_code == 500
    assert "secret" not in response.text
    assert set(response.json()["error"]) == ERROR_KEYS


async def test_service_down_is_503_without_internals() -> None:
    channel = grpc.aio.insecure_channel("127.0.0.1:1")
    try:
        app = create_app(GatewaySettings(), channel=channel)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
            response = await http.post(CHAT, json=GOOD, headers={"Authorization": "Bearer rk-test"})
            health = await http.get("/healthz")
    finally:
        await channel.close()
    assert response.status_code == 503  # Raven itself is unreachable: not an upstream's 502 (SPEC §9)
    assert response.headers["retry-after"] == "1"
    assert response.json()["error"] == {
        "message": "The service is temporarily unavailable. Please retry.",
        "type": "api_error",
        "code": "service_unavailable",
        "param": None,
    }
    assert "127.0.0.1" not in response.text
    assert health.status_code == 503


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        ({**GOOD, "stream": "yes"}, "stream", "invalid_type"),
        ({**GOOD, "temperature": "hot"}, "temperature", "invalid_type"),
        ({**GOOD, "max_tokens": 1.5}, "max_tokens", "invalid_type"),
        ({**GOOD, "max_tokens": "5"}, "max_tokens", "invalid_type"),
        ({**GOOD, "max_tokens": 2**40}, "max_tokens", "invalid_value"),
        ({**GOOD, "seed": True}, "seed", "invalid_type"),
        ({**GOOD, "stop": 5}, "stop", "invalid_type"),
        ({**GOOD, "tools": {"type": "function"}}, "tools", "invalid_type"),
        ({**GOOD, "tools": [{"type": "function"}]}, "tools[0].function", "missing_required_parameter"),
        ({**GOOD, "tool_choice": 3}, "tool_choice", "invalid_type"),
        ({"model": "m", "messages": "hi"}, "messages", "invalid_type"),
        ({"model": "m", "messages": [{"content": "hi"}]}, "messages[0].role", "missing_required_parameter"),
        ({"model": "m", "messages": [{"role": 5, "content": "hi"}]}, "messages[0].role", "invalid_type"),
        ({"model": "m", "messages": [{"role": "user", "content": 5}]}, "messages[0].content", "invalid_type"),
        (
            {"model": "m", "messages": [{"role": "user", "content": [{"text": "x"}]}]},
            "messages[0].content[0].type",
            "missing_required_parameter",
        ),
        ({"messages": []}, "model", "missing_required_parameter"),
        ({"model": 1, "messages": []}, "model", "invalid_type"),
        ({"model": "m"}, "messages", "missing_required_parameter"),
    ],
)
async def test_wrong_types_are_400_naming_the_field(
    http: httpx.AsyncClient, fake: FakeService, body: dict[str, Any], param: str, code: str
) -> None:
    response = await http.post(CHAT, json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert set(error) == ERROR_KEYS
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert error["code"] == code
    assert fake.received_beyond_auth_probe() == []


async def test_sdk_sees_validation_param(client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}], temperature="hot")  # type: ignore[arg-type]
    assert raised.value.param == "temperature"


@pytest.mark.parametrize(
    "raw",
    [b"{not json", b"", b"[1, 2]", b'"text"', b"null", b'{"model": "m", "messages": [] ', b"\xff\xfe", b"1e400"],
)
async def test_malformed_bodies_are_400(http: httpx.AsyncClient, fake: FakeService, raw: bytes) -> None:
    response = await http.post(CHAT, content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 400, response.text
    assert set(response.json()["error"]) == ERROR_KEYS
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert fake.received_beyond_auth_probe() == []


async def test_form_content_type_still_parsed_as_json(http: httpx.AsyncClient, fake: FakeService) -> None:
    response = await http.post(
        CHAT, content=b'{"model": "m", "messages": []}', headers={"content-type": "application/x-www-form-urlencoded"}
    )
    assert response.status_code == 200
    assert len(fake.chat.received) == 1


@pytest.fixture
def small_app(channel: grpc.aio.Channel) -> Litestar:
    return create_app(GatewaySettings(max_body_bytes=1024), channel=channel)


async def test_body_over_limit_is_413(small_app: Litestar, fake: FakeService) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "x" * 2000}]}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=small_app), base_url="http://t") as http:
        response = await http.post(CHAT, json=body, headers={"Authorization": "Bearer rk-test"})
        ok = await http.post(CHAT, json=GOOD, headers={"Authorization": "Bearer rk-test"})
    assert response.status_code == 413
    assert response.json()["error"] == {
        "message": "The request body is too large.",
        "type": "invalid_request_error",
        "code": "payload_too_large",
        "param": None,
    }
    assert ok.status_code == 200
    assert len(fake.chat.received) == 1


async def test_unknown_route_and_method(http: httpx.AsyncClient) -> None:
    missing = await http.get("/v1/nope")
    assert missing.status_code == 404
    assert missing.json()["error"]["message"] == "Invalid URL (GET /v1/nope)"
    assert set(missing.json()["error"]) == ERROR_KEYS
    root = await http.get("/whatever")
    assert root.status_code == 404
    assert root.headers["content-type"] == "application/json"
    wrong = await http.get(CHAT)
    assert wrong.status_code == 405
    assert set(wrong.json()["error"]) == ERROR_KEYS
    assert "POST" in wrong.headers["allow"]
