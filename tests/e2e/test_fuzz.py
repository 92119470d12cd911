"""Schemathesis fuzzing of the published OpenAPI document: no input ever yields a 5xx."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]
SCHEMATHESIS = str(Path(sys.executable).parent / "schemathesis")


def test_no_server_error_under_schemathesis(raven, tmp_path):
    p = raven()
    out = subprocess.run(
        [SCHEMATHESIS, "run", f"{p.base}/openapi.json", "-H", f"Authorization: Bearer {p.key}",
         "--checks", "not_a_server_error", "--max-examples", "150", "--request-timeout", "20",
         "--seed", "20261128"],
        capture_output=True, text=True, timeout=280, cwd=tmp_path,
    )
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert " passed" in out.stdout and "generated" in out.stdout
