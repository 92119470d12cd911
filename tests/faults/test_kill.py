"""SPEC §9 across process death: SIGKILL with open streams leaves holds that expire by themselves
(the next instance's sweeper releases them); SIGTERM with open streams settles every one of them."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import threading
import time

import httpx
import pytest
from raven_procs import BIN, start_raven

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

ENV = {"RAVEN_LEASE_TTL_SECONDS": "1"}  # holds lapse 1 s after their instance stops renewing them


def _credit_key(proc, name: str) -> str:
    out = subprocess.run([str(BIN / "raven"), "keys", "create", "--name", name, "--credits", "10",
                          "--data-dir", str(proc.data_dir)], capture_output=True, text=True, timeout=30,
                         env={"PATH": str(BIN)})
    assert out.returncode == 0, out.stderr
    return next(tok for tok in out.stdout.split() if tok.startswith("rk-"))


def _open_streams(base: str, key: str, n: int) -> list[threading.Thread]:
    started = threading.Barrier(n + 1, timeout=20)

    def one() -> None:
        try:
            with httpx.stream("POST", base + "/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                              json={"model": "raven/local-chat", "stream": True, "max_tokens": 60,
                                    "messages": [{"role": "user", "content": "Tell me a long story."}]},
                              timeout=30) as resp:
                it = resp.iter_lines()
                next(it)  # the first event: admitted, hold taken
                started.wait()
                for _ in it:
                    pass
        except (httpx.HTTPError, threading.BrokenBarrierError):
            pass

    threads = [threading.Thread(target=one, daemon=True) for _ in range(n)]
    for t in threads:
        t.start()
    started.wait()
    return threads


def _books(db) -> tuple[int, int, int]:
    with sqlite3.connect(db) as conn:
        holds = conn.execute("SELECT COUNT(*) FROM credit_holds").fetchone()[0]
        reserved = conn.execute("SELECT COALESCE(SUM(credits_reserved), 0) FROM api_keys").fetchone()[0]
        records = conn.execute("SELECT COUNT(*) FROM usage_records WHERE kind = 'chat'").fetchone()[0]
    return holds, reserved, records


def test_sigkill_holds_expire_and_the_next_instance_releases_them(tmp_path) -> None:
    data = tmp_path / "data"
    first = start_raven(data, env=ENV, tps="20")
    key = _credit_key(first, "doomed")
    threads = _open_streams(first.base, key, 4)
    db = data / "raven.db"
    holds, reserved, _ = _books(db)
    assert holds >= 1 and reserved > 0  # one credit slice (or a hold per stream with slices off)
    first.proc.send_signal(signal.SIGKILL)
    first.proc.wait(10)
    for t in threads:
        t.join(10)
    assert _books(db)[:2] == (holds, reserved)  # nobody settled them: the process is gone

    second = start_raven(data, key=first.key, env=ENV)
    try:
        deadline = time.monotonic() + 20
        while _books(db)[0] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _books(db)[:2] == (0, 0)  # reserved == sum of live holds == 0
    finally:
        assert second.stop() == 0


def test_sigterm_with_open_streams_settles_each_exactly_once(tmp_path) -> None:
    data = tmp_path / "data"
    proc = start_raven(data, env=ENV, tps="20")
    key = _credit_key(proc, "draining")
    threads = _open_streams(proc.base, key, 4)
    assert proc.stop() == 0
    for t in threads:
        t.join(10)
    holds, reserved, records = _books(data / "raven.db")
    assert (holds, reserved, records) == (0, 0, 4)

