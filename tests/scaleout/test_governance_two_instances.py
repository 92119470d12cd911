"""SPEC §11 across instances (PostgreSQL + Redis): budget windows and TPM are shared, not per instance."""

from __future__ import annotations

import concurrent.futures
from decimal import Decimal

import httpx
import pytest
from raven_procs import start_raven
from test_two_instances import chat, create_key

pytestmark = [pytest.mark.backends, pytest.mark.timeout(180)]


@pytest.fixture
def pair(shared_env, tmp_path):
    procs = [start_raven(tmp_path / f"g{i}", key="unused", env=shared_env, tps="0") for i in range(2)]
    yield procs
    for p in procs:
        if p.proc.poll() is None:
            p.proc.kill()
            p.proc.wait(10)


def test_budget_for_k_requests_admits_exactly_k_across_instances(pair, shared_env):
    text = "echo: " + "word " * 20
    probe_key = create_key(shared_env, "--rpm", "100000")
    n_out = chat(pair[0], probe_key, text).json()["usage"]["completion_tokens"]
    cost = Decimal(str(chat(pair[0], probe_key, text, max_tokens=n_out).json()["usage"]["cost"]))
    k = 4
    key = create_key(shared_env, "--rpm", "100000", "--concurrency", "100", "--budget", f"{cost * k + cost / 2}/day")
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        responses = list(pool.map(lambda i: chat(pair[i % 2], key, text, max_tokens=n_out), range(24)))
    codes = [r.status_code for r in responses]
    assert codes.count(200) == k and codes.count(402) == 24 - k, codes
    refused = responses[codes.index(402)]
    assert refused.json()["error"]["code"] == "budget_exhausted" and "x-ratelimit-reset-credits" in refused.headers
    me = httpx.get(pair[1].base + "/v1/key", headers={"Authorization": f"Bearer {key}"}, timeout=30).json()["data"]
    assert Decimal(me["budget"]["used"]) == cost * k  # the window's spend is exact, whichever instance served


def test_tpm_is_shared_across_instances(pair, shared_env):
    text = "echo: " + "word " * 30
    probe_key = create_key(shared_env, "--rpm", "100000")
    prompt = chat(pair[0], probe_key, text, max_tokens=1).json()["usage"]["prompt_tokens"]
    k = 3
    key = create_key(shared_env, "--rpm", "100000", "--concurrency", "100", "--tpm", str(prompt * k + prompt // 2))
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        responses = list(pool.map(lambda i: chat(pair[i % 2], key, text, max_tokens=1), range(20)))
    codes = [r.status_code for r in responses]
    # Reservations alone admit at most k (settling to the real counts only adds); per-instance
    # windows would admit up to 2k.
    assert 1 <= codes.count(200) <= k and codes.count(429) == 20 - codes.count(200), codes
    refused = responses[codes.index(429)]
    assert refused.json()["error"]["code"] == "token_rate_limit_exceeded"
    assert refused.headers["x-ratelimit-limit-tokens"] == str(prompt * k + prompt // 2)

