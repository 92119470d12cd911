"""OpenTelemetry tracing over the real OTLP/HTTP path and the JSON access logs, on a real
`raven serve` process: the official openai SDK calls it, a fake OpenAI-compatible upstream fails
then serves (retries + fallback), and an in-process OTLP receiver decodes what the exporter sent."""

from __future__ import annotations

import json
import subprocess

import grpc
import httpx
import openai
import pytest
from fakes.openai_upstream import FakeOpenAI, Scenario
from fakes.otlp_receiver import OtlpReceiver, ReceivedSpan
from raven_procs import BIN, start_raven

from raven.v1 import chat_pb2, chat_service_pb2, chat_service_pb2_grpc

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

SERVER, CLIENT = 2, 3
UPSTREAM_SECRET = "sk-upstream-secret-never-exported-0123456789"
PROMPT = "the secret recipe is pistachio-42"


def _config(tmp_path, base_url: str):
    path = tmp_path / "raven.toml"
    path.write_text(f"""
[providers.flaky]
kind = "openai"
base_url = "{base_url}"
api_key_env = "FLAKY_UPSTREAM_KEY"
max_retries = 1
retry_base_delay = 0
retry_max_delay = 0

[providers.good]
kind = "openai"
base_url = "{base_url}"
api_key_env = "FLAKY_UPSTREAM_KEY"

[models."test/fallback"]
routes = [{{ provider = "flaky", model = "bad-model" }}, {{ provider = "good", model = "good-model" }}]
capabilities = ["chat"]
price_input_per_mtok = 1
price_output_per_mtok = 2

[models."raven/local-chat"]
routes = [{{ provider = "local", model = "local-chat" }}]
capabilities = ["chat"]
price_input_per_mtok = 1
price_output_per_mtok = 2
""")
    return path


def _access_lines(text: str) -> list[dict]:
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{"):
            out.append(json.loads(line))
    return out


def test_spans_per_request_and_attempt_and_json_access_logs(tmp_path):
    with OtlpReceiver() as receiver, FakeOpenAI.in_thread() as fake:
        fake.on_model("bad-model", Scenario.error(500, "upstream broke", type="server_error"))
        config = _config(tmp_path, fake.base_url)
        proc = start_raven(
            tmp_path / "data",
            env={
                "RAVEN_CONFIG": str(config),
                "RAVEN_OTEL_ENDPOINT": receiver.endpoint,
                "RAVEN_OTEL_SERVICE_NAME": "raven-under-test",
                "RAVEN_ACCESS_LOG": "true",
                "FLAKY_UPSTREAM_KEY": UPSTREAM_SECRET,
            },
        )
        try:
            client = openai.OpenAI(base_url=proc.base + "/v1", api_key=proc.key, max_retries=0)
            fallback = client.chat.completions.create(
                model="test/fallback",
                messages=[{"role": "user", "content": PROMPT}],
                extra_headers={"x-request-id": "req-fallback-1"},
            )
            stream = client.chat.completions.create(
                model="raven/local-chat",
                stream=True,
                max_tokens=8,
                messages=[{"role": "user", "content": PROMPT}],
                extra_headers={"x-request-id": "req-stream-1"},
            )
            chunks = list(stream)
            with pytest.raises(openai.AuthenticationError):
                openai.OpenAI(base_url=proc.base + "/v1", api_key="rk-" + "x" * 40, max_retries=0).models.list(
                    extra_headers={"x-request-id": "req-badkey-1"}
                )
            with grpc.insecure_channel(f"127.0.0.1:{proc.grpc}") as channel:  # the network gRPC port
                reply = chat_service_pb2_grpc.ChatServiceStub(channel).CreateChatCompletion(
                    chat_service_pb2.CreateChatCompletionRequest(
                        model="raven/local-chat",
                        max_tokens=3,
                        messages=[chat_pb2.ChatMessage(role="user", content=PROMPT)],
                    ),
                    metadata=(("authorization", f"Bearer {proc.key}"), ("x-request-id", "req-grpc-1")),
                    timeout=30,
                )
            gen = httpx.get(
                f"{proc.base}/v1/generation",
                params={"id": fallback.id},
                headers={"authorization": f"Bearer {proc.key}", "x-request-id": "req-gen-1"},
            ).json()["data"]
        finally:
            assert proc.stop() == 0
        output = "".join(proc.output) + (proc.proc.stdout.read() or "")  # type: ignore[union-attr]
        spans = receiver.wait_for(lambda s: len([x for x in s if x.kind == SERVER]) >= 5)

    keys = subprocess.run(
        [str(BIN / "raven"), "keys", "list", "--data-dir", str(tmp_path / "data")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    key_id = next(line.split()[0] for line in keys.splitlines() if " default " in line)

    # -- spans: the OTLP path, a service name, one SERVER span per request
    assert set(receiver.paths) == {"/v1/traces"}
    assert {s.service_name for s in spans} == {"raven-under-test"}
    by_rid: dict[str, list[ReceivedSpan]] = {}
    for s in spans:
        if s.kind == SERVER and "raven.request_id" in s.attributes:
            by_rid.setdefault(s.attributes["raven.request_id"], []).append(s)
    assert sorted(by_rid) == ["req-badkey-1", "req-fallback-1", "req-gen-1", "req-grpc-1", "req-stream-1"]
    assert all(len(v) == 1 for v in by_rid.values())

    root = by_rid["req-fallback-1"][0]
    assert root.name == "chat test/fallback"
    a = root.attributes
    assert a["gen_ai.operation.name"] == "chat"
    assert a["gen_ai.request.model"] == "test/fallback"
    assert a["gen_ai.provider.name"] == "good" and a["gen_ai.system"] == "good"
    assert a["gen_ai.response.model"] == "good-model"
    assert a["gen_ai.response.id"] == fallback.id
    assert a["gen_ai.usage.input_tokens"] == fallback.usage.prompt_tokens == gen["prompt_tokens"]
    assert a["gen_ai.usage.output_tokens"] == fallback.usage.completion_tokens == gen["completion_tokens"]
    assert a["raven.key_id"] == key_id
    assert a["rpc.grpc.status_code"] == "OK" and root.status_code != 2

    # -- one CLIENT span per upstream attempt: 2 on the flaky route (1 retry), then the fallback
    attempts = [s for s in spans if s.kind == CLIENT and s.trace_id == root.trace_id]
    assert len(attempts) == 3
    assert all(s.parent_span_id == root.span_id for s in attempts)
    assert sorted(
        (s.attributes["gen_ai.provider.name"], s.attributes["gen_ai.request.model"], s.status_code) for s in attempts
    ) == [("flaky", "bad-model", 2), ("flaky", "bad-model", 2), ("good", "good-model", 0)]
    failed = [s for s in attempts if s.status_code == 2]
    assert {s.attributes["error.type"] for s in failed} == {failed[0].attributes["error.type"]}
    ok = next(s for s in attempts if s.status_code == 0)
    assert ok.attributes["gen_ai.usage.input_tokens"] == fallback.usage.prompt_tokens

    streamed = by_rid["req-stream-1"][0]
    usage = next(c.usage for c in chunks if c.usage)
    assert streamed.attributes["gen_ai.provider.name"] == "local"
    assert streamed.attributes["gen_ai.usage.output_tokens"] == usage.completion_tokens == 8
    stream_attempts = [s for s in spans if s.kind == CLIENT and s.trace_id == streamed.trace_id]
    assert len(stream_attempts) == 1 and stream_attempts[0].parent_span_id == streamed.span_id
    assert "gen_ai.first_token" in stream_attempts[0].events

    over_grpc = by_rid["req-grpc-1"][0]
    assert over_grpc.attributes["gen_ai.usage.output_tokens"] == reply.usage.completion_tokens == 3
    assert over_grpc.attributes["rpc.method"] == "CreateChatCompletion"
    assert len([s for s in spans if s.kind == CLIENT and s.trace_id == over_grpc.trace_id]) == 1

    bad = by_rid["req-badkey-1"][0]
    assert bad.attributes["rpc.grpc.status_code"] == "UNAUTHENTICATED" and bad.status_code == 2
    assert "raven.key_id" not in bad.attributes

    # -- never on the wire: secrets, prompt text
    wire = b"".join(receiver.bodies)
    for secret in (proc.key, UPSTREAM_SECRET, PROMPT, "pistachio"):
        assert secret.encode() not in wire

    # -- JSON access logs: one http line and one rpc line per request, sharing the request id
    lines = _access_lines(output)
    rpc = {line["request_id"]: line for line in lines if line.get("log") == "rpc" and line["request_id"]}
    http = {line["request_id"]: line for line in lines if line.get("log") == "http"}
    fb = rpc["req-fallback-1"]
    assert (fb["key_id"], fb["model"], fb["provider"], fb["status"], fb["grpc_code"]) == (
        key_id,
        "test/fallback",
        "good",
        "completed",
        "OK",
    )
    assert fb["generation_id"] == fallback.id and fb["prompt_tokens"] == gen["prompt_tokens"]
    assert isinstance(fb["latency_ms"], float | int) and fb["latency_ms"] >= 0
    assert (http["req-fallback-1"]["status"], http["req-fallback-1"]["route"]) == (200, "/v1/chat/completions")
    assert (rpc["req-stream-1"]["model"], rpc["req-stream-1"]["status"]) == ("raven/local-chat", "completed")
    assert (rpc["req-badkey-1"]["grpc_code"], rpc["req-badkey-1"]["key_id"]) == ("UNAUTHENTICATED", "")
    assert http["req-badkey-1"]["status"] == 401
    logged = "\n".join(line for line in output.splitlines() if line.startswith("{"))
    assert len(logged.splitlines()) == len(lines) > 8
    for secret in (proc.key, UPSTREAM_SECRET, PROMPT, "pistachio", "Bearer"):
        assert secret not in logged


def test_tracing_is_off_by_default(tmp_path):
    """No endpoint: no exporter, no SDK loaded, no access lines."""
    from tests_support import service  # noqa: F401  (sanity: the in-process helper stays importable)

    proc = start_raven(tmp_path / "data")
    try:
        r = httpx.post(
            f"{proc.base}/v1/chat/completions",
            headers={"authorization": f"Bearer {proc.key}"},
            json={"model": "raven/local-chat", "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]},
        )
        assert r.status_code == 200
    finally:
        assert proc.stop() == 0
    output = "".join(proc.output) + (proc.proc.stdout.read() or "")  # type: ignore[union-attr]
    assert _access_lines(output) == []
