"""SPEC §11 across instances (PostgreSQL + Redis): budget windows and TPM are shared, not per instance."""

from __future__ import annotations

import concurrent.futures
import threading
import time
from decimal import Decimal

import httpx
import openai
import pytest
from raven_procs import start_raven
from test_two_instances import CHAT, chat, create_key

from raven_service.core.tokens import count_message_tokens
from raven_service.core.types import Message

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


def _sdk(p, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=p.base + "/v1", api_key=key, max_retries=0, timeout=30)


def test_tpm_admits_exactly_the_shared_allowance_across_instances(pair, shared_env):
    # The admission estimate of this prompt is count_message_tokens (core/tokens.py), and the local
    # simulator reports the very same prompt count; max_tokens=1 makes every completion 1 token.
    text = "echo: " + "word " * 30
    prompt = count_message_tokens([Message(role="user", content=text)], None)
    messages = [{"role": "user", "content": text}]
    probe = _sdk(pair[0], create_key(shared_env, "--rpm", "100000")).chat.completions.create(
        model=CHAT, messages=messages, max_tokens=1)
    assert (probe.usage.prompt_tokens, probe.usage.completion_tokens) == (prompt, 1)
    # k reservations of `prompt` fit, a (k+1)-th never does (slack < prompt), and settling the k
    # admitted requests to their real counts (+1 token each) never crowds one of them out (slack >= k).
    k, slack = 3, prompt // 2
    tpm = prompt * k + slack
    assert k <= slack < prompt and tpm // prompt == k  # one instance on its own admits exactly k
    key = create_key(shared_env, "--rpm", "100000", "--concurrency", "100", "--tpm", str(tpm))
    n = 20  # 10 per instance: an in-process (per-instance) window would admit k on each, 2k in all
    clients = [_sdk(p, key) for p in pair]
    barrier = threading.Barrier(n)

    def call(i: int):
        barrier.wait()
        try:
            return clients[i % 2].chat.completions.with_raw_response.create(model=CHAT, messages=messages,
                                                                            max_tokens=1)
        except openai.APIStatusError as exc:
            return exc

    with concurrent.futures.ThreadPoolExecutor(n) as pool:
        results = list(pool.map(call, range(n)))
    admitted = [r for r in results if not isinstance(r, Exception)]
    refused = [r for r in results if isinstance(r, openai.RateLimitError)]
    assert len(admitted) == k and len(refused) == n - k, [type(r).__name__ for r in results]
    assert len(admitted) < 2 * (tpm // prompt) and n // 2 > tpm // prompt  # a per-instance limiter fails here
    assert {r.code for r in refused} == {"token_rate_limit_exceeded"}
    for r in admitted:
        assert r.headers["x-ratelimit-limit-tokens"] == str(tpm)
        assert r.parse().usage.total_tokens == prompt + 1
    for exc in refused:
        h = exc.response.headers
        assert h["x-ratelimit-limit-tokens"] == str(tpm)
        # k reservations are in the window; 0..k of the admitted requests' +1 settlements had landed
        assert tpm - k * prompt - k <= int(h["x-ratelimit-remaining-tokens"]) <= tpm - k * prompt
        assert h["x-ratelimit-reset-tokens"].endswith("s") and 1 <= int(h["x-ratelimit-reset-tokens"][:-1]) <= 60
        assert int(h["retry-after"]) >= 1

    # Once every settlement has landed, either instance reports the same exact window: k * (prompt + 1).
    remaining = []
    for _ in range(100):
        remaining = []
        for c in clients:
            with pytest.raises(openai.RateLimitError) as ei:
                c.chat.completions.create(model=CHAT, messages=messages, max_tokens=1)
            remaining.append(int(ei.value.response.headers["x-ratelimit-remaining-tokens"]))
        if remaining == [tpm - k * (prompt + 1)] * 2:
            break
        time.sleep(0.05)
    assert remaining == [tpm - k * (prompt + 1)] * 2
