"""`raven serve` end to end: REST via the official SDK, gRPC via buf curl reflection, SIGTERM."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]
BUF = Path(sys.executable).parent / "buf"


def test_serve_first_key_rest_and_sigterm(raven):
    p = raven()
    assert p.key.startswith("rk-")
    assert any("http://127.0.0.1:" in line for line in p.output)
    client = openai.OpenAI(base_url=p.base + "/v1", api_key=p.key, max_retries=0)
    out = client.chat.completions.create(model="raven/local-chat",
                                         messages=[{"role": "user", "content": "What is the meaning of life?"}])
    assert out.choices[0].message.content
    text = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
        model="raven/local-chat", stream=True, messages=[{"role": "user", "content": "echo: streamed"}])
        if c.choices)
    assert text == "streamed"
    assert p.stop() == 0


def test_buf_curl_reflection_lists_and_streams(raven):
    p = raven()
    url = f"http://127.0.0.1:{p.grpc}"
    listed = subprocess.run([str(BUF), "curl", "--protocol", "grpc", "--http2-prior-knowledge", "--list-services",
                             url], capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    for name in ("raven.v1.ChatService", "raven.v1.ModelService", "raven.v1.ImageService", "raven.v1.VideoService",
                 "raven.v1.KeyService", "raven.v1.UsageService", "grpc.health.v1.Health"):
        assert name in listed.stdout
    called = subprocess.run(
        [str(BUF), "curl", "--protocol", "grpc", "--http2-prior-knowledge", "-H", f"authorization: Bearer {p.key}",
         "-d", json.dumps({"model": "raven/local-chat", "messages": [{"role": "user", "content": "echo: via buf"}]}),
         f"{url}/raven.v1.ChatService/StreamChatCompletion"],
        capture_output=True, text=True, timeout=60)
    assert called.returncode == 0, called.stderr
    msgs = [json.loads(chunk) for chunk in _json_objects(called.stdout)]
    text = "".join(c.get("delta", {}).get("content", "") for m in msgs for c in m.get("choices", []))
    assert text == "via buf"
    assert "usage" in msgs[-1]
    for protocol in ("grpc-v1", "grpc-v1alpha"):  # SPEC §8: reflection under both versions
        out = subprocess.run([str(BUF), "curl", "--protocol", "grpc", "--http2-prior-knowledge", "--reflect-protocol",
                              protocol, "--list-methods", url], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, (protocol, out.stderr)
        assert "raven.v1.ChatService/StreamChatCompletion" in out.stdout
        assert "raven.v1.KeyService/CreateKey" in out.stdout
    unauth = subprocess.run(
        [str(BUF), "curl", "--protocol", "grpc", "--http2-prior-knowledge", "-d", "{}",
         f"{url}/raven.v1.ModelService/ListModels"], capture_output=True, text=True, timeout=60)
    assert unauth.returncode != 0 and "unauthenticated" in unauth.stderr.lower()


def _json_objects(text: str):
    dec = json.JSONDecoder()
    i = 0
    while i < len(text):
        while i < len(text) and text[i].isspace():
            i += 1
        if i >= len(text):
            break
        obj, i = dec.raw_decode(text, i)
        yield json.dumps(obj)


def test_restart_loses_no_video_task(raven, tmp_path):
    p = raven()
    headers = {"Authorization": f"Bearer {p.key}"}
    ids = []
    for i in range(3):
        r = httpx.post(p.base + "/v1/video/generations", headers=headers,
                       json={"model": "raven/local-video", "prompt": f"clip {i}", "seconds": 2, "size": "320x180"})
        assert r.status_code == 200, r.text
        ids.append(r.json()["id"])
    assert p.stop() == 0
    p2 = raven(key=p.key)
    deadline = time.monotonic() + 60
    done = {}
    while time.monotonic() < deadline and len(done) < len(ids):
        for task_id in ids:
            r = httpx.get(f"{p2.base}/v1/video/generations/{task_id}", headers=headers)
            assert r.status_code == 200, r.text
            if r.json()["status"] in ("completed", "failed"):
                done[task_id] = r.json()
        time.sleep(0.2)
    assert len(done) == 3 and all(v["status"] == "completed" for v in done.values()), done
    video = httpx.get(done[ids[0]]["outputs"][0]["url"], headers=headers)
    assert video.status_code == 200 and video.content[4:8] == b"ftyp"
    assert p2.stop() == 0


def test_sigterm_drains_an_open_stream(raven):
    """SIGTERM while a stream is open: the stream still completes with [DONE], then exit 0."""
    import signal
    import threading

    p = raven(tps="100")
    lines: list[str] = []

    def consume() -> None:
        with httpx.stream("POST", p.base + "/v1/chat/completions", headers={"Authorization": f"Bearer {p.key}"},
                          json={"model": "raven/local-chat", "stream": True, "max_tokens": 150,
                                "messages": [{"role": "user", "content": "write a long story"}]}, timeout=60) as r:
            lines.extend(r.iter_lines())

    t = threading.Thread(target=consume)
    t.start()
    time.sleep(0.5)  # the stream is under way (150 tokens take ~1.5 s)
    p.proc.send_signal(signal.SIGTERM)
    t.join(60)
    assert p.proc.wait(30) == 0
    data = [line for line in lines if line.startswith("data:")]
    assert data[-1] == "data: [DONE]"
    assert json.loads(data[-2][6:])["usage"]["completion_tokens"] == 150
    with pytest.raises(httpx.HTTPError):
        httpx.get(p.base + "/healthz", timeout=1)


def test_metrics_show_gateway_and_service_series_without_secrets(raven):
    p = raven()
    headers = {"Authorization": f"Bearer {p.key}"}
    for _ in range(2):
        assert httpx.post(p.base + "/v1/chat/completions", headers=headers, json={
            "model": "raven/local-chat", "messages": [{"role": "user", "content": "echo: m"}]}).status_code == 200
    assert httpx.post(p.base + "/v1/chat/completions", headers=headers, json={
        "model": "raven/local-chat", "messages": [{"role": "wizard", "content": "x"}]}).status_code == 400
    text = httpx.get(p.base + "/metrics").text
    series = 'raven_generations_total{kind="chat",model="raven/local-chat",provider="local",status="completed"}'
    assert f"{series} 2.0" in text
    assert 'raven_tokens_total{direction="completion",model="raven/local-chat",provider="local"}' in text
    assert 'raven_upstream_attempts_total{outcome="ok",route="local/local-chat"} 2.0' in text
    assert "raven_generation_latency_seconds_bucket" in text
    # `raven serve` froze start-up's heap out of the collector's view (server.settle_heap)
    frozen = re.search(r"^raven_gc_frozen_objects (\S+)$", text, re.M)
    assert frozen and float(frozen.group(1)) > 10_000, frozen
    assert 'python_gc_collections_total{generation="2"}' in text
    assert p.key not in text and p.key[:12] not in text
