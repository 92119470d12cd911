"""Claude Code (npm @anthropic-ai/claude-code, pinned in the Makefile) against a real `raven serve`
and the local simulator: `claude -p` with ANTHROPIC_BASE_URL at Raven and a Raven key as
ANTHROPIC_API_KEY, a plain prompt and a Bash tool round trip, and the usage records they leave.

Claude Code runs with its own HOME, CLAUDE_CONFIG_DIR and CLAUDE_CODE_TMPDIR under the test's tmp
dir (no user config is read) and telemetry, error reporting, autoupdates and nonessential traffic
off. Observed with strace on 2.1.332: its only connection is the one to Raven on 127.0.0.1, and no
DNS lookup happens. Each turn is one streamed `POST /v1/messages?beta=true` with 12 tools, adaptive
thinking, `output_config`, `context_management` and `<system-reminder>` text blocks before the
prompt (the simulator reads the prompt, not the reminders). The model id is sent as given;
Claude Code only warns that it does not know the context window of `raven/local-chat`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from raven_procs import BIN, ROOT

CLAUDE = ROOT / ".tools" / "claude-code" / "node_modules" / ".bin" / "claude"
MODEL = "raven/local-chat"

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def claude() -> Path:
    """The Claude Code binary, installed by `make claude` (needs npm and the registry once)."""
    if not CLAUDE.exists():
        if shutil.which("npm") is None:
            pytest.skip("npm is not installed: Claude Code cannot be installed (make claude)")
        done = subprocess.run(["make", "-s", "claude"], cwd=ROOT, capture_output=True, text=True, timeout=240)
        assert done.returncode == 0, done.stdout + done.stderr
    return CLAUDE


def _run(claude: Path, user: Path, work: Path, base: str, key: str, prompt: str, *args: str) -> dict:
    """`claude -p <prompt> --output-format json`; the JSON result (asserting a clean exit)."""
    (user / "tmp").mkdir(parents=True, exist_ok=True)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(user),
        "CLAUDE_CONFIG_DIR": str(user / ".claude"),
        "CLAUDE_CODE_TMPDIR": str(user / "tmp"),
        "ANTHROPIC_BASE_URL": base,
        "ANTHROPIC_API_KEY": key,
        "ANTHROPIC_MODEL": MODEL,
        "ANTHROPIC_DEFAULT_HAIKU_MODEL": MODEL,
        "ANTHROPIC_SMALL_FAST_MODEL": MODEL,
        "DISABLE_TELEMETRY": "1",
        "DISABLE_ERROR_REPORTING": "1",
        "DISABLE_AUTOUPDATER": "1",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        # On a loaded machine Claude Code moves a slow Bash command to a background task and answers
        # "Command running in background with ID ..." instead of its output: the round trip below
        # checks the output itself, so commands run in the foreground.
        "CLAUDE_CODE_DISABLE_BACKGROUND_TASKS": "1",
        "NO_COLOR": "1",
    }
    done = subprocess.run(
        [str(claude), "-p", prompt, "--output-format", "json", *args],
        cwd=work,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(done.stdout)
    assert result["type"] == "result" and result["subtype"] == "success" and result["is_error"] is False, result
    return result


def _transcript(user: Path, session: str) -> list[dict]:
    """The messages of one session as Claude Code recorded them (its projects/*.jsonl file)."""
    [path] = (user / ".claude" / "projects").rglob(f"{session}.jsonl")
    entries = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [e["message"] for e in entries if e.get("type") in ("user", "assistant")]


def _records(data_dir: Path) -> list[dict]:
    out = subprocess.run(
        [str(BIN / "raven"), "usage", "export", "--format", "jsonl", "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={k: v for k, v in os.environ.items() if not k.startswith("RAVEN_")},
    )
    assert out.returncode == 0, out.stderr
    return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]


def test_claude_code_text_and_bash_tool_round_trip(claude: Path, raven, tmp_path: Path) -> None:
    proc = raven()
    user, work = tmp_path / "user", tmp_path / "work"
    work.mkdir()

    text = _run(claude, user, work, proc.base, proc.key, "echo: hello from claude code")
    assert text["result"] == "hello from claude code"
    assert text["num_turns"] == 1 and text["stop_reason"] == "end_turn"

    # The local model calls the tool the prompt names with the command in backticks; Claude Code
    # runs it (allowed without asking by --allowedTools) and sends the tool_result back.
    tool = _run(claude, user, work, proc.base, proc.key, "Use Bash to run `pwd`", "--allowedTools", "Bash")
    assert tool["num_turns"] == 2 and tool["permission_denials"] == []
    messages = _transcript(user, tool["session_id"])
    uses = [b for m in messages if m["role"] == "assistant" for b in m["content"] if b["type"] == "tool_use"]
    results = [
        b
        for m in messages
        if m["role"] == "user" and isinstance(m["content"], list)
        for b in m["content"]
        if b["type"] == "tool_result"
    ]
    assert [(u["name"], u["input"]["command"], u["input"].get("run_in_background", False)) for u in uses] == [
        ("Bash", "pwd", False)
    ]
    assert [(r["tool_use_id"], r["content"], r.get("is_error")) for r in results] == [(uses[0]["id"], str(work), False)]
    # the simulator answers the tool result by quoting it
    assert tool["result"].startswith(f'The Bash tool returned "{work}".')

    records = _records(proc.data_dir)
    # one generation for the text turn, two for the tool turn (the call, then the answer to its result)
    assert len(records) == 3
    assert all(
        r["model"] == MODEL
        and r["provider"] == "local"
        and r["status"] == "completed"
        and r["streamed"]
        and r["kind"] == "chat"
        for r in records
    )
    assert [r["finish_reason"] for r in records] == ["stop", "tool_calls", "stop"]
    # the message ids Claude Code recorded are Raven's generation ids
    ids = [m["id"] for m in messages if m["role"] == "assistant"]
    assert ids == [r["id"] for r in records[1:]]
    # and the usage it summed up is the usage Raven recorded
    assert tool["usage"]["input_tokens"] == sum(r["prompt_tokens"] for r in records[1:])
    assert tool["usage"]["output_tokens"] == sum(r["completion_tokens"] for r in records[1:])
    assert text["usage"]["output_tokens"] == records[0]["completion_tokens"] == 4
