"""`raven serve --workers 2`: `/metrics` on any worker sums every worker (prometheus-client
multiprocess mode in a per-run directory), and the JSON access lines show both workers served."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from raven_procs import BIN, ROOT, free_port

RAVEN = str(BIN / "raven")

pytestmark = [pytest.mark.e2e, pytest.mark.backends, pytest.mark.timeout(120)]


def _sample(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


def test_metrics_aggregate_all_workers(shared_env, tmp_path):
    http, grpc_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAVEN_", "PROMETHEUS_"))}
    env.update(
        shared_env, RAVEN_ACCESS_LOG="true", RAVEN_LOCAL_TOKENS_PER_SECOND="0", RAVEN_DATA_DIR=str(tmp_path / "data")
    )
    proc = subprocess.Popen(
        [RAVEN, "serve", "--workers", "2", "--http-port", str(http), "--grpc-port", str(grpc_port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=ROOT,
    )
    base = f"http://127.0.0.1:{http}"
    collected: list[str] = []
    reader = threading.Thread(target=lambda: collected.extend(iter(proc.stdout.readline, "")), daemon=True)
    reader.start()
    try:
        key = ""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not key:
            m = re.search(r"(rk-[A-Za-z0-9_-]{32,})", "".join(collected))
            key = m.group(1) if m else ""
            time.sleep(0.05)
        assert key, "".join(collected)
        ready = 0
        while time.monotonic() < deadline and ready < 10:  # both workers bound (several new connections answer)
            try:
                ready += httpx.get(f"{base}/healthz", timeout=2).status_code == 200
            except httpx.HTTPError:
                time.sleep(0.1)
        auth = {"authorization": f"Bearer {key}"}
        n = 40
        for i in range(n):  # a new connection each: SO_REUSEPORT spreads them over the workers
            r = httpx.get(f"{base}/v1/models", headers={**auth, "x-request-id": f"models-{i}"}, timeout=10)
            assert r.status_code == 200
        for i in range(4):
            r = httpx.post(
                f"{base}/v1/chat/completions",
                headers={**auth, "x-request-id": f"chat-{i}"},
                timeout=30,
                json={"model": "raven/local-chat", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]},
            )
            assert r.status_code == 200
        scrapes = [httpx.get(f"{base}/metrics", timeout=10).text for _ in range(6)]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        reader.join(10)
    output = "".join(collected)
    assert proc.returncode == 0, output

    for text in scrapes:
        assert _sample(text, "raven_gateway_requests_total", route="/v1/models", method="GET", status="200") == n
        assert _sample(text, "raven_gateway_requests_total", route="/v1/chat/completions", status="200") == 4
        assert _sample(text, "raven_generations_total", model="raven/local-chat", status="completed") == 4
        assert _sample(text, "raven_tokens_total", model="raven/local-chat", direction="completion") == 20

    lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    models = [line for line in lines if line.get("log") == "rpc" and line["request_id"].startswith("models-")]
    assert len(models) == n
    assert len({line["pid"] for line in models}) == 2  # both workers served: no single worker saw all n
    assert key not in output.split("shown once, store it now")[-1].split("\n", 1)[-1]
