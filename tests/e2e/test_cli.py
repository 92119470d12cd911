"""The `raven` CLI on the same state as a running server."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]
RAVEN = str(Path(sys.executable).parent / "raven")


def cli(*args: str, data_dir: Path) -> subprocess.CompletedProcess:
    return subprocess.run([RAVEN, *args, "--data-dir", str(data_dir)], capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin"})


def test_keys_lifecycle_against_running_server(raven):
    p = raven(tps="100")
    made = cli("keys", "create", "--name", "ci", "--rpm", "5", "--concurrency", "2", "--credits", "0.5",
               data_dir=p.data_dir)
    assert made.returncode == 0, made.stderr
    secret = made.stdout.strip()
    assert secret.startswith("rk-") and len(secret) >= 35
    assert secret not in made.stderr
    listed = cli("keys", "list", data_dir=p.data_dir)
    assert "ci" in listed.stdout and secret not in listed.stdout and "0.5" in listed.stdout
    key_id = next(line.split()[0] for line in listed.stdout.splitlines() if " ci " in line)
    headers = {"Authorization": f"Bearer {secret}"}
    r = httpx.post(p.base + "/v1/chat/completions", headers=headers,
                   json={"model": "raven/local-chat", "messages": [{"role": "user", "content": "echo: hi"}]})
    assert r.status_code == 200, r.text
    assert r.headers["x-ratelimit-limit-requests"] == "5"
    assert cli("keys", "revoke", key_id, data_dir=p.data_dir).returncode == 0
    for _ in range(40):  # the server trusts a verified key for at most ~1 s
        r = httpx.get(p.base + "/v1/models", headers=headers)
        if r.status_code == 401:
            break
        time.sleep(0.1)
    assert r.status_code == 401
    assert cli("keys", "revoke", "key_nope", data_dir=p.data_dir).returncode != 0
    bad = cli("keys", "create", "--name", "x", "--credits", "lots", data_dir=p.data_dir)
    assert bad.returncode == 2 and "credits" in bad.stderr


def test_db_upgrade_and_usage_export(raven, tmp_path):
    data = tmp_path / "state"
    up = cli("db", "upgrade", data_dir=data)
    assert up.returncode == 0 and "schema version" in up.stdout
    again = cli("db", "upgrade", data_dir=data)
    assert "applied migrations: none" in again.stdout
    p = raven(data_dir=data)
    headers = {"Authorization": f"Bearer {p.key}"}
    for i in range(3):
        r = httpx.post(p.base + "/v1/chat/completions", headers=headers,
                       json={"model": "raven/local-chat", "messages": [{"role": "user", "content": f"echo: {i}"}]})
        assert r.status_code == 200
    assert p.stop() == 0  # flushes the usage ledger
    out = cli("usage", "export", "--format", "jsonl", data_dir=data)
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert len(rows) == 3 and {r["status"] for r in rows} == {"completed"}
    assert all(r["model"] == "raven/local-chat" and float(r["cost"]) > 0 for r in rows)
    out = cli("usage", "export", "--format", "csv", data_dir=data)
    table = list(csv.DictReader(io.StringIO(out.stdout)))
    assert len(table) == 3 and table[0]["provider"] == "local"


def test_check_config_names_the_wrong_key(tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text('[providers.x]\nkind = "openia"\nbase_url = "http://127.0.0.1:1"\n')
    out = subprocess.run([RAVEN, "serve", "--check-config", "--config", str(cfg)], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 2 and "providers.x.kind" in out.stderr
    cfg.write_text('[models."m"]\nroutes = [{ provider = "ghost", model = "m" }]\n')
    out = subprocess.run([RAVEN, "serve", "--check-config", "--config", str(cfg)], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 2 and 'models."m".routes[0].provider' in out.stderr


def test_stream_is_not_buffered(raven):
    """The first chunk reaches the client long before the stream ends (no buffering anywhere)."""
    p = raven(tps="100")
    stamps = []
    with httpx.stream("POST", p.base + "/v1/chat/completions", headers={"Authorization": f"Bearer {p.key}"},
                      json={"model": "raven/local-chat", "stream": True, "max_tokens": 60,
                            "messages": [{"role": "user", "content": "write a long story"}]}, timeout=30) as r:
        for line in r.iter_lines():
            if line.startswith("data: {"):
                stamps.append(time.monotonic())
    assert len(stamps) > 30
    assert stamps[-1] - stamps[0] > 0.3  # 60 tokens at 100 tokens/s arrive spread out, not at once
