"""Time to the first content token through each ingress dialect, same upstream, same key.

    python bench/dialect_ttft.py --base http://127.0.0.1:18000 --key rk-... [-n 40] [--model gpt-4o-mini]

For each of /v1/chat/completions, /v1/messages and /v1/responses (stream: true), sequential
requests (c=1) and the time until the first *content* event: a chat chunk with delta.content, a
Messages `content_block_delta`, a Responses `response.output_text.delta` (the events each dialect
sends before any token, such as `message_start` or `response.created`, do not count). Prints one
JSON line per dialect with p50 / p90 (ms) and the p50 difference to the chat route. The client is
the same for all three (httpx on its own core), so the differences are Raven's.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import httpx

HELLO = "Say hello."


def bodies(model: str) -> dict[str, tuple[str, dict]]:
    return {
        "chat": ("/v1/chat/completions", {"model": model, "stream": True,
                                          "messages": [{"role": "user", "content": HELLO}]}),
        "messages": ("/v1/messages", {"model": model, "stream": True, "max_tokens": 256,
                                      "messages": [{"role": "user", "content": HELLO}]}),
        "responses": ("/v1/responses", {"model": model, "stream": True, "input": HELLO, "store": False}),
    }


def first_content(dialect: str, line: str) -> bool:
    if not line.startswith("data:"):
        return False
    data = line[5:].strip()
    if not data or data == "[DONE]":
        return False
    event = json.loads(data)
    if dialect == "chat":
        choices = event.get("choices") or []
        return bool(choices and (choices[0].get("delta") or {}).get("content"))
    if dialect == "messages":
        return event.get("type") == "content_block_delta"
    return event.get("type") == "response.output_text.delta"


def one(client: httpx.Client, dialect: str, path: str, body: dict) -> float:
    start = time.perf_counter()
    ttft = None
    with client.stream("POST", path, json=body) as r:
        r.raise_for_status()
        for line in r.iter_lines():  # read to the end: the next request starts after this one
            if ttft is None and first_content(dialect, line):
                ttft = time.perf_counter() - start
    if ttft is None:
        raise RuntimeError(f"{dialect}: the stream carried no content")
    return ttft


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(p / 100 * len(values)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", default="http://127.0.0.1:18000")
    ap.add_argument("--key", required=True)
    ap.add_argument("--model", default="gpt-4o-mini")
    ap.add_argument("-n", "--requests", type=int, default=40)
    ap.add_argument("--rounds", type=int, default=3, help="the dialects take turns this many times")
    args = ap.parse_args()
    headers = {"Authorization": f"Bearer {args.key}", "anthropic-version": "2023-06-01"}
    samples: dict[str, list[float]] = {d: [] for d in bodies(args.model)}
    with httpx.Client(base_url=args.base, headers=headers, timeout=30) as client:  # loopback only
        for dialect, (path, body) in bodies(args.model).items():
            one(client, dialect, path, body)  # warm-up
        per_round = max(1, args.requests // args.rounds)
        for _ in range(args.rounds):
            for dialect, (path, body) in bodies(args.model).items():
                samples[dialect] += [one(client, dialect, path, body) for _ in range(per_round)]
    chat_p50 = pct(samples["chat"], 50) * 1000
    for dialect, values in samples.items():
        p50 = pct(values, 50) * 1000
        print(json.dumps({"dialect": dialect, "requests": len(values), "ttft_p50_ms": round(p50, 3),
                          "ttft_p90_ms": round(pct(values, 90) * 1000, 3),
                          "ttft_mean_ms": round(statistics.fmean(values) * 1000, 3),
                          "vs_chat_p50_ms": round(p50 - chat_p50, 3)}), flush=True)


if __name__ == "__main__":
    main()
