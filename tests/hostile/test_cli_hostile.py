"""The CLI and start-up against bad values (SPEC §10, §11 bootstrap): one line on stderr, exit 2,
never a traceback; RAVEN_ADMIN_KEY creates the admin key without printing a secret."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from raven_procs import ROOT, free_port, start_raven

RAVEN = str(Path(sys.executable).parent / "raven")

BAD = [
    ["keys", "create", "--name", "x", "--credits", "1000000000000"],
    ["keys", "create", "--name", "x", "--credits", "lots"],
    ["keys", "create", "--name", "x", "--credits", "-1"],
    ["keys", "create", "--name", "x", "--credits", "NaN"],
    ["keys", "create", "--name", "x", "--rpm", "abc"],
    ["keys", "create", "--name", "x", "--rpm", "-5"],
    ["keys", "create", "--name", "x", "--concurrency", "99999999999999999999"],
    ["keys", "create", "--name", " "],
    ["keys", "create"],
    ["keys", "frobnicate"],
    ["serve", "--http-port", "99999"],
    ["serve", "--workers", "0"],
    ["nope"],
]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAVEN_")}
    env.update(extra)
    return env


@pytest.mark.parametrize("args", BAD, ids=[" ".join(a) for a in BAD])
def test_bad_flags_are_one_line_and_exit_2(tmp_path, args):
    done = subprocess.run([RAVEN, *args, "--data-dir", str(tmp_path / "d")], capture_output=True, text=True,
                          timeout=60, env=_env(), cwd=ROOT)
    assert done.returncode == 2, done
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert done.stdout == ""


def test_invalid_admin_key_is_a_clear_startup_error(tmp_path):
    done = subprocess.run([RAVEN, "serve", "--data-dir", str(tmp_path / "d"), "--http-port", str(free_port()),
                           "--grpc-port", str(free_port())], capture_output=True, text=True, timeout=60,
                          env=_env(RAVEN_ADMIN_KEY="rk-short-and-bad"), cwd=ROOT)
    assert done.returncode == 2
    assert "RAVEN_ADMIN_KEY" in done.stderr and "rk-short-and-bad" not in done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1


@pytest.mark.e2e
@pytest.mark.timeout(120)
def test_admin_key_from_the_environment(tmp_path):
    secret = "rk-" + secrets.token_urlsafe(32)
    proc = start_raven(tmp_path / "d", key=secret, env={"RAVEN_ADMIN_KEY": secret})
    try:
        output = "".join(proc.output)
        assert secret not in output and "rk-" not in output.replace("RAVEN_ADMIN_KEY", "")
        r = httpx.get(proc.base + "/v1/models", headers={"Authorization": f"Bearer {secret}"}, timeout=10)
        assert r.status_code == 200, r.text
    finally:
        assert proc.stop() == 0
    again = start_raven(tmp_path / "d", key=secret, env={"RAVEN_ADMIN_KEY": secret})  # idempotent restart
    try:
        assert "Created the admin API key" not in "".join(again.output)
        listed = subprocess.run([RAVEN, "keys", "list", "--data-dir", str(tmp_path / "d")], capture_output=True,
                                text=True, timeout=60, env=_env(), cwd=ROOT)
        assert listed.stdout.count("bootstrap-admin") == 1 and secret not in listed.stdout
    finally:
        again.stop()
