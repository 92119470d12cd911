"""Codex CLI (npm @openai/codex, pinned in the Makefile) against a real `raven serve` and the local
simulator: `codex exec` with a custom model provider whose base URL is Raven's /v1 and
``wire_api = "responses"``, a plain prompt and a tool round trip, and the usage records they leave.

Codex runs with its own CODEX_HOME under the test's tmp dir (so no user config is read), update
checks and analytics off. Observed with strace on 0.171.0: the only TCP connections go to Raven on
127.0.0.1; Codex still resolves github.com / api.github.com in DNS at start (no connection follows).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from raven_procs import BIN, ROOT

CODEX = ROOT / ".tools" / "codex" / "node_modules" / ".bin" / "codex"
MODEL = "raven/local-chat"

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def codex() -> Path:
    """The Codex binary, installed by `make codex` (needs npm and the registry once)."""
    if not CODEX.exists():
        if shutil.which("npm") is None:
            pytest.skip("npm is not installed: Codex CLI cannot be installed (make codex)")
        done = subprocess.run(["make", "-s", "codex"], cwd=ROOT, capture_output=True, text=True, timeout=240)
        assert done.returncode == 0, done.stdout + done.stderr
    return CODEX


def _config(home: Path, base: str) -> None:
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(f"""
model = "{MODEL}"
model_provider = "raven"
check_for_update_on_startup = false

[analytics]
enabled = false

[model_providers.raven]
name = "Raven"
base_url = "{base}/v1"
wire_api = "responses"
env_key = "RAVEN_API_KEY"
request_max_retries = 0
stream_max_retries = 0
""")


def _exec(codex: Path, home: Path, work: Path, key: str, prompt: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home.parent), "CODEX_HOME": str(home),
           "RAVEN_API_KEY": key, "NO_COLOR": "1"}
    return subprocess.run([str(codex), "exec", "--skip-git-repo-check", "--color", "never", prompt], cwd=work,
                          env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)


def _rollout_items(home: Path) -> list[dict]:
    """The response items of every session Codex recorded (its rollout files)."""
    items = []
    for path in sorted((home / "sessions").rglob("*.jsonl")):
        for line in path.read_text().splitlines():
            entry = json.loads(line)
            if entry.get("type") == "response_item":
                items.append(entry["payload"])
    return items


def _records(data_dir: Path) -> list[dict]:
    out = subprocess.run([str(BIN / "raven"), "usage", "export", "--format", "jsonl", "--data-dir", str(data_dir)],
                         capture_output=True, text=True, timeout=60, cwd=ROOT,
                         env={k: v for k, v in os.environ.items() if not k.startswith("RAVEN_")})
    assert out.returncode == 0, out.stderr
    return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]


def test_codex_exec_text_and_tool_round_trip(codex: Path, raven, tmp_path: Path) -> None:
    proc = raven()
    home, work = tmp_path / "user" / "codex-home", tmp_path / "work"
    work.mkdir()
    _config(home, proc.base)

    text = _exec(codex, home, work, proc.key, "echo: hello from codex")
    assert text.returncode == 0, text.stdout + text.stderr
    assert text.stdout.strip().splitlines()[-1] == "hello from codex"

    # The local model calls the tool the prompt names; Codex runs it and sends the result back.
    tool = _exec(codex, home, work, proc.key, "Use exec_command to run the command pwd")
    assert tool.returncode == 0, tool.stdout + tool.stderr
    items = _rollout_items(home)
    calls = [i for i in items if i.get("type") == "function_call"]
    outputs = [i for i in items if i.get("type") == "function_call_output"]
    assert calls and "exec_command" in {c["name"] for c in calls}
    assert {o["call_id"] for o in outputs} == {c["call_id"] for c in calls}
    assert items[-1]["type"] == "message" and items[-1]["role"] == "assistant"

    records = _records(proc.data_dir)
    # one generation for the text turn, two for the tool turn (the call, then the answer to its result)
    assert len(records) == 3
    assert all(r["model"] == MODEL and r["provider"] == "local" and r["status"] == "completed"
               and r["streamed"] for r in records)
    assert sorted(r["finish_reason"] for r in records) == ["stop", "stop", "tool_calls"]
    assert all(r["prompt_tokens"] > 0 and r["completion_tokens"] > 0 for r in records)
