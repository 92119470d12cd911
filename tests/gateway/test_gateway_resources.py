"""Models, images, videos, files and generation records through the gateway."""

from __future__ import annotations

import base64

import grpc
import httpx
import openai
import pytest
from gateway_fakes import RATE_METADATA, FakeService, video_task
from google.protobuf import timestamp_pb2
from google.rpc import status_pb2
from litestar import Litestar

from gateway import GatewaySettings, create_app
from raven.v1 import usage_service_pb2, video_pb2

# ---------------------------------------------------------------------------------------- models


async def test_list_models(client: openai.AsyncOpenAI, fake: FakeService) -> None:
    page = await client.models.list()
    ids = [m.id for m in page.data]
    assert ids == ["raven/local-chat", "raven/local-image"]
    first = page.data[0]
    assert first.object == "model"
    assert first.owned_by == "local"
    extra = first.model_extra or {}
    assert extra["capabilities"] == ["chat", "tools", "json"]
    assert extra["context_length"] == 32_768
    assert extra["pricing"] == {"prompt": "0.5", "completion": "1.5"}
    assert extra["supported_parameters"] == ["max_tokens", "temperature"]
    assert fake.models.received[0].request.capability == ""


async def test_list_models_by_capability_and_headers(http: httpx.AsyncClient, fake: FakeService) -> None:
    response = await http.get("/v1/models", params={"capability": "images"})
    assert response.json()["object"] == "list"
    assert fake.models.received[0].request.capability == "images"
    for key, value in RATE_METADATA:
        assert response.headers[key] == value


async def test_retrieve_model_with_slash_in_id(
    client: openai.AsyncOpenAI, http: httpx.AsyncClient, fake: FakeService
) -> None:
    model = await client.models.retrieve("raven/local-chat")  # the SDK sends raven%2Flocal-chat
    assert model.id == "raven/local-chat"
    raw = await http.get("/v1/models/raven/local-chat")
    assert raw.status_code == 200
    assert raw.json()["id"] == "raven/local-chat"
    assert [r.request.id for r in fake.models.received] == ["raven/local-chat", "raven/local-chat"]


async def test_unknown_model_is_404(client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as raised:
        await client.models.retrieve("nope/nothing")
    assert raised.value.code == "model_not_found"


# ---------------------------------------------------------------------------------------- images


async def test_images_b64(client: openai.AsyncOpenAI, fake: FakeService) -> None:
    result = await client.images.generate(
        model="raven/local-image", prompt="a raven", n=2, size="256x256", extra_body={"seed": 3}
    )
    assert result.data is not None
    assert len(result.data) == 2
    assert base64.b64decode(result.data[0].b64_json or "")[:4] == b"\x89PNG"
    assert result.data[0].url is None
    assert result.usage is not None
    request = fake.images.received[0].request
    assert (request.model, request.prompt, request.n, request.size, request.seed) == (
        "raven/local-image",
        "a raven",
        2,
        "256x256",
        3,
    )
    assert not request.HasField("response_format")


async def test_images_url_is_absolute_from_request(http: httpx.AsyncClient) -> None:
    response = await http.post(
        "/v1/images/generations", json={"model": "raven/local-image", "prompt": "p", "response_format": "url"}
    )
    body = response.json()
    assert body["data"] == [{"url": "http://testserver/v1/files/file-0/content", "revised_prompt": "p"}]
    assert body["id"] == "img-1"
    assert body["usage"]["cost"] == 0.01


async def test_images_url_uses_public_base_url(channel: grpc.aio.Channel) -> None:
    app = create_app(GatewaySettings(public_base_url="https://api.example.com/"), channel=channel)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://internal:8000") as http:
        sdk = openai.AsyncOpenAI(base_url="http://internal:8000/v1", api_key="rk-test", max_retries=0, http_client=http)
        result = await sdk.images.generate(model="raven/local-image", prompt="p", response_format="url")
    assert result.data is not None
    assert result.data[0].url == "https://api.example.com/v1/files/file-0/content"


@pytest.mark.parametrize("bad", [{"n": "2"}, {"n": 1.5}, {"prompt": 5}, {"seed": "x"}])
async def test_images_strict_types(http: httpx.AsyncClient, fake: FakeService, bad: dict[str, object]) -> None:
    response = await http.post("/v1/images/generations", json={"model": "m", "prompt": "p", **bad})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == next(iter(bad))
    assert fake.received_beyond_auth_probe() == []


# ---------------------------------------------------------------------------------------- videos


async def test_create_video_with_idempotency_key(http: httpx.AsyncClient, fake: FakeService) -> None:
    response = await http.post(
        "/v1/video/generations",
        json={
            "model": "raven/local-video",
            "prompt": "a raven",
            "seconds": 4,
            "size": "640x360",
            "image": "data:image/png;base64,AAAA",
            "seed": 9,
        },
        headers={"Idempotency-Key": "key-123"},
    )
    assert response.status_code == 200
    body = response.json()
    assert body["id"] == "vid-1"
    assert body["object"] == "video.generation"
    assert body["status"] == "queued"
    assert body["completed_at"] is None
    assert body["url"] is None
    assert body["outputs"] == []
    assert body["error"] is None
    assert body["created_at"] == 1_710_000_000
    assert body["cost"] == 0.04
    request = fake.videos.received[0].request
    assert request.request_id == "key-123"
    assert (request.seconds, request.size, request.seed) == (4, "640x360", 9)
    assert request.image == "data:image/png;base64,AAAA"


async def test_create_video_without_key_and_strict_seconds(http: httpx.AsyncClient, fake: FakeService) -> None:
    ok = await http.post("/v1/video/generations", json={"model": "v", "prompt": "p"})
    assert ok.status_code == 200
    assert fake.videos.received[0].request.request_id == ""
    bad = await http.post("/v1/video/generations", json={"model": "v", "prompt": "p", "seconds": "4"})
    assert bad.status_code == 400
    assert bad.json()["error"]["param"] == "seconds"


@pytest.mark.parametrize(
    ("state", "status"),
    [
        (video_pb2.VideoGeneration.STATE_QUEUED, "queued"),
        (video_pb2.VideoGeneration.STATE_RUNNING, "in_progress"),
        (video_pb2.VideoGeneration.STATE_SUCCEEDED, "completed"),
        (video_pb2.VideoGeneration.STATE_FAILED, "failed"),
    ],
)
async def test_poll_video_states(http: httpx.AsyncClient, fake: FakeService, state: int, status: str) -> None:
    fake.videos.tasks["vid-1"] = video_task(state, progress=50)
    body = (await http.get("/v1/video/generations/vid-1")).json()
    assert body["status"] == status
    assert body["progress"] == 50


async def test_completed_video_has_absolute_outputs(http: httpx.AsyncClient, fake: FakeService) -> None:
    fake.videos.tasks["vid-1"] = video_task(
        video_pb2.VideoGeneration.STATE_SUCCEEDED,
        progress=100,
        complete_time=timestamp_pb2.Timestamp(seconds=1_710_000_030),
        expire_time=timestamp_pb2.Timestamp(seconds=1_710_086_400),
        outputs=[video_pb2.VideoOutput(url="/v1/files/file-v/content", mime_type="video/mp4", size_bytes=1234)],
    )
    body = (await http.get("/v1/video/generations/vid-1")).json()
    assert body["completed_at"] == 1_710_000_030
    assert body["expires_at"] == 1_710_086_400
    assert body["outputs"] == [
        {"url": "http://testserver/v1/files/file-v/content", "mime_type": "video/mp4", "size_bytes": 1234}
    ]
    assert body["url"] == "http://testserver/v1/files/file-v/content"


async def test_failed_video_reports_error(http: httpx.AsyncClient, fake: FakeService) -> None:
    fake.videos.tasks["vid-1"] = video_task(
        video_pb2.VideoGeneration.STATE_FAILED, error=status_pb2.Status(code=14, message="upstream gave up")
    )
    body = (await http.get("/v1/video/generations/vid-1")).json()
    assert body["status"] == "failed"
    assert body["error"] == {"message": "upstream gave up", "code": "unavailable"}


async def test_unknown_video_is_404(http: httpx.AsyncClient) -> None:
    response = await http.get("/v1/video/generations/vid-nope")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


async def test_list_videos(http: httpx.AsyncClient, fake: FakeService) -> None:
    fake.videos.tasks["vid-1"] = video_task()
    body = (await http.get("/v1/video/generations", params={"limit": 1, "page_token": "abc"})).json()
    assert body["object"] == "list"
    assert [t["id"] for t in body["data"]] == ["vid-1"]
    assert body["has_more"] is True
    assert body["next_page_token"] == "next"
    request = fake.videos.received[0].request
    assert (request.page_size, request.page_token) == (1, "abc")


# ----------------------------------------------------------------------------------------- files


async def test_download_file_streams_bytes(http: httpx.AsyncClient, fake: FakeService) -> None:
    fake.files.files["file-v"] = ("video/mp4", [b"abc", b"def", b"g"])
    response = await http.get("/v1/files/file-v/content")
    assert response.status_code == 200
    assert response.content == b"abcdefg"
    assert response.headers["content-type"] == "video/mp4"
    assert response.headers["content-length"] == "7"
    assert fake.files.received[0].metadata["authorization"] == "Bearer rk-test"


async def test_download_unknown_file_is_404(http: httpx.AsyncClient) -> None:
    response = await http.get("/v1/files/file-nope/content")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


async def test_download_needs_a_key(app: Litestar, fake: FakeService) -> None:
    fake.files.files["file-v"] = ("image/png", [b"x"])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as anonymous:
        response = await anonymous.get("/v1/files/file-v/content")
    assert response.status_code == 401


# ------------------------------------------------------------------------------------ generation


async def test_generation_lookup(http: httpx.AsyncClient, fake: FakeService) -> None:
    fake.usage.generations["chatcmpl-1"] = usage_service_pb2.Generation(
        id="chatcmpl-1",
        model="raven/local-chat",
        provider="local",
        upstream_model="sim",
        prompt_tokens=12,
        completion_tokens=3,
        total_cost="0.000123",
        latency_ms=40,
        ttft_ms=5,
        status="completed",
        finish_reason="stop",
        native_finish_reason="stop",
        streamed=True,
        attempts=["local/sim:ok"],
        create_time=timestamp_pb2.Timestamp(seconds=1_710_000_000),
        kind="chat",
    )
    response = await http.get("/v1/generation", params={"id": "chatcmpl-1"})
    assert response.status_code == 200
    assert response.json() == {
        "data": {
            "id": "chatcmpl-1",
            "model": "raven/local-chat",
            "provider": "local",
            "upstream_model": "sim",
            "prompt_tokens": 12,
            "completion_tokens": 3,
            "total_cost": 0.000123,
            "latency_ms": 40,
            "ttft_ms": 5,
            "status": "completed",
            "finish_reason": "stop",
            "native_finish_reason": "stop",
            "streamed": True,
            "usage_estimated": False,
            "attempts": ["local/sim:ok"],
            "created_at": 1_710_000_000,
            "kind": "chat",
            "error": None,
        }
    }
    assert fake.usage.received[0].request.id == "chatcmpl-1"


async def test_generation_needs_id(http: httpx.AsyncClient, fake: FakeService) -> None:
    response = await http.get("/v1/generation")
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "id"
    assert fake.all_received() == []
    assert (await http.get("/v1/generation", params={"id": "x"})).status_code == 404


# ------------------------------------------------------------------------------------ operations


async def test_healthz(http: httpx.AsyncClient, fake: FakeService) -> None:
    from grpc_health.v1 import health_pb2

    ok = await http.get("/healthz", headers={"Authorization": ""})
    assert (ok.status_code, ok.json()) == (200, {"status": "ok"})
    await fake.health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    down = await http.get("/healthz")
    assert (down.status_code, down.json()) == (503, {"status": "unavailable"})


async def test_metrics_count_by_route_template(http: httpx.AsyncClient) -> None:
    await http.get("/v1/models/raven/local-chat")
    await http.get("/v1/models/nope")
    text = (await http.get("/metrics")).text
    assert 'raven_gateway_requests_total{method="GET",route="/v1/models/{model_id}",status="200"} 1.0' in text
    assert 'raven_gateway_requests_total{method="GET",route="/v1/models/{model_id}",status="404"} 1.0' in text
    assert "raven_gateway_request_duration_seconds_bucket" in text
    assert "rk-test" not in text
    assert "local-chat" not in text


async def test_openapi_document_and_docs_page(app: Litestar) -> None:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as anonymous:
        document = (await anonymous.get("/openapi.json")).json()
        docs = await anonymous.get("/docs")
    assert document["openapi"].startswith("3.1")
    for path in [
        "/v1/chat/completions",
        "/v1/models",
        "/v1/models/{model_id}",
        "/v1/images/generations",
        "/v1/video/generations",
        "/v1/video/generations/{task_id}",
        "/v1/files/{file_id}/content",
        "/v1/generation",
    ]:
        assert path in document["paths"]
    assert "ChatCompletionRequest" in document["components"]["schemas"]
    assert document["paths"]["/v1/chat/completions"]["post"]["security"] == [{"bearerAuth": []}]
    assert docs.status_code == 200
    assert "text/html" in docs.headers["content-type"]


async def test_app_opens_its_own_channel(fake: FakeService, live_gateway: object) -> None:
    app = create_app(GatewaySettings(grpc_target=fake.target))
    async with live_gateway(app) as base, httpx.AsyncClient(base_url=base) as http:  # type: ignore[operator]
        health = await http.get("/healthz")
        models = await http.get("/v1/models", headers={"Authorization": "Bearer rk-test"})
    assert health.status_code == 200
    assert models.status_code == 200
    assert app.state.backend is None  # closed at shutdown


def test_settings_defaults() -> None:
    settings = GatewaySettings()
    assert settings.max_body_bytes == 10 * 1024 * 1024
    assert settings.keepalive_interval == 10.0
    assert settings.public_base_url is None
