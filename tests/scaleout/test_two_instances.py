"""SPEC §6 across instances: limits, credits and video tasks hold with several processes."""

from __future__ import annotations

import concurrent.futures
import os
import signal
import subprocess
import sys
import threading
import time
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from raven_procs import free_port, start_raven

pytestmark = [pytest.mark.backends, pytest.mark.timeout(180)]
RAVEN = str(Path(sys.executable).parent / "raven")
CHAT = "raven/local-chat"


def create_key(env: dict[str, str], *args: str) -> str:
    out = subprocess.run([RAVEN, "keys", "create", "--name", "t", *args], env={**os.environ, **env},
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


@pytest.fixture
def pair(shared_env, tmp_path):
    procs = []
    for i in range(2):
        procs.append(start_raven(tmp_path / f"d{i}", key="unused", env=shared_env, tps="0"))
    yield procs
    for p in procs:
        if p.proc.poll() is None:
            p.proc.kill()
            p.proc.wait(10)


def chat(p, key: str, text: str = "echo: hi", **extra) -> httpx.Response:
    return httpx.post(p.base + "/v1/chat/completions", headers={"Authorization": f"Bearer {key}"}, timeout=30,
                      json={"model": CHAT, "messages": [{"role": "user", "content": text}], **extra})


def test_rpm_is_exact_across_instances(pair, shared_env):
    key = create_key(shared_env, "--rpm", "10", "--concurrency", "100")
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        codes = list(pool.map(lambda i: chat(pair[i % 2], key).status_code, range(30)))
    assert codes.count(200) == 10 and codes.count(429) == 20, codes


def test_concurrency_holds_across_instances_and_kill_frees_the_slot(shared_env, tmp_path):
    slow = start_raven(tmp_path / "a", key="unused", env=shared_env, tps="20")
    fast = start_raven(tmp_path / "b", key="unused", env=shared_env, tps="0")
    try:
        key = create_key(shared_env, "--rpm", "1000", "--concurrency", "1")
        started = threading.Event()

        def hold() -> None:
            try:
                with httpx.stream("POST", slow.base + "/v1/chat/completions", timeout=60,
                                  headers={"Authorization": f"Bearer {key}"},
                                  json={"model": CHAT, "stream": True,
                                        "messages": [{"role": "user", "content": "write a long story"}]}) as r:
                    for line in r.iter_lines():
                        if line.startswith("data: {"):
                            started.set()
            except httpx.HTTPError:
                pass  # the instance is killed under us

        t = threading.Thread(target=hold, daemon=True)
        t.start()
        assert started.wait(20)
        r = chat(fast, key)
        assert r.status_code == 429 and r.json()["error"]["code"] == "concurrency_limit_exceeded"
        slow.proc.send_signal(signal.SIGKILL)  # a crash: the lease is never released
        slow.proc.wait(10)
        deadline = time.monotonic() + 10  # lease TTL is 2 s in these tests
        while time.monotonic() < deadline:
            r = chat(fast, key)
            if r.status_code == 200:
                break
            time.sleep(0.2)
        assert r.status_code == 200, "the killed instance's slot was never reclaimed"
    finally:
        for p in (slow, fast):
            if p.proc.poll() is None:
                p.proc.kill()
                p.proc.wait(10)


def test_credits_for_k_requests_admit_exactly_k_across_instances(pair, shared_env):
    text = "echo: " + "word " * 20
    probe_key = create_key(shared_env, "--rpm", "100000")
    probe = chat(pair[0], probe_key, text).json()["usage"]
    n_out = probe["completion_tokens"]
    # With max_tokens equal to the real output, each request's reservation equals its actual cost.
    cost = Decimal(str(chat(pair[0], probe_key, text, max_tokens=n_out).json()["usage"]["cost"]))
    k = 5
    key = create_key(shared_env, "--rpm", "100000", "--concurrency", "100", "--credits", str(cost * k + cost / 2))
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        responses = list(pool.map(lambda i: chat(pair[i % 2], key, text, max_tokens=n_out), range(30)))
    codes = [r.status_code for r in responses]
    assert codes.count(200) == k and codes.count(402) == 30 - k, codes
    assert responses[codes.index(402)].json()["error"]["code"] == "insufficient_credits"


def test_video_created_on_one_polled_and_downloaded_on_the_other(pair, shared_env):
    key = create_key(shared_env, "--rpm", "1000", "--credits", "1")
    auth = {"Authorization": f"Bearer {key}"}
    r = httpx.post(pair[0].base + "/v1/video/generations", headers={**auth, "Idempotency-Key": "abc"},
                   json={"model": "raven/local-video", "prompt": "rain", "seconds": 2, "size": "160x96"})
    assert r.status_code == 200, r.text
    task_id = r.json()["id"]
    again = httpx.post(pair[1].base + "/v1/video/generations", headers={**auth, "Idempotency-Key": "abc"},
                       json={"model": "raven/local-video", "prompt": "rain", "seconds": 2, "size": "160x96"})
    assert again.json()["id"] == task_id
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        got = httpx.get(f"{pair[1].base}/v1/video/generations/{task_id}", headers=auth).json()
        if got["status"] in ("completed", "failed"):
            break
        time.sleep(0.2)
    assert got["status"] == "completed", got
    url = got["outputs"][0]["url"].replace(pair[1].base, pair[0].base)
    video = httpx.get(url, headers=auth)
    assert video.status_code == 200 and video.content[4:8] == b"ftyp"
    keys = subprocess.run([RAVEN, "keys", "list"], env={**os.environ, **shared_env}, capture_output=True,
                          text=True, timeout=60).stdout
    line = next(line for line in keys.splitlines() if line.split()[1:2] == ["t"])
    assert "0.02" in line.split()  # charged once: 2 s x 0.01 credits, despite the duplicate submit


def test_workers_mode_serves_and_stops(shared_env, tmp_path):
    http, grpc_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAVEN_")}
    env.update(shared_env)
    proc = subprocess.Popen([RAVEN, "serve", "--workers", "2", "--http-port", str(http), "--grpc-port",
                             str(grpc_port)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        key = create_key(shared_env, "--rpm", "1000")
        deadline = time.monotonic() + 30
        ok = 0
        while time.monotonic() < deadline and ok < 20:
            try:
                r = httpx.post(f"http://127.0.0.1:{http}/v1/chat/completions",
                               headers={"Authorization": f"Bearer {key}"}, timeout=10,
                               json={"model": CHAT, "messages": [{"role": "user", "content": "echo: w"}]})
                ok += r.status_code == 200
            except httpx.HTTPError:
                time.sleep(0.2)
        assert ok == 20
        children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
        assert len(children) == 2
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(40) == 0


def test_restart_during_video_tasks_completes_them_without_double_charge(shared_env, tmp_path):
    import asyncio

    from raven_service.storage.postgres import PostgresStore

    key = create_key(shared_env, "--rpm", "1000", "--credits", "1")
    auth = {"Authorization": f"Bearer {key}"}
    first = start_raven(tmp_path / "a", key="unused", env=shared_env)
    ids = []
    for i in range(4):
        r = httpx.post(first.base + "/v1/video/generations", headers=auth,
                       json={"model": "raven/local-video", "prompt": f"clip {i}", "seconds": 1, "size": "160x96"})
        assert r.status_code == 200, r.text
        ids.append(r.json()["id"])
    time.sleep(0.3)  # some are running (each local job takes >= 1 s), the rest queued
    assert first.stop() == 0  # SIGTERM returns claimed tasks to the queue
    second = start_raven(tmp_path / "b", key="unused", env=shared_env)
    try:
        deadline = time.monotonic() + 60
        states = {}
        while time.monotonic() < deadline:
            states = {t: httpx.get(f"{second.base}/v1/video/generations/{t}", headers=auth).json()["status"]
                      for t in ids}
            if all(s in ("completed", "failed") for s in states.values()):
                break
            time.sleep(0.2)
        assert set(states.values()) == {"completed"}, states
    finally:
        second.stop()

    async def key_state():
        store = PostgresStore(shared_env["RAVEN_DATABASE_URL"])
        await store.open()
        try:
            return next(k for k in await store.list_keys(True) if k.name == "t")
        finally:
            await store.close()

    k = asyncio.run(key_state())
    assert k.credits_used == Decimal("0.04")  # 4 tasks x 1 s x 0.01: each charged exactly once
    assert k.credits_reserved == 0
