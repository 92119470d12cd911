"""Memory soak: mixed streaming / unary / abandoned-stream traffic against a running Raven, with
the RSS of its process tree sampled throughout.

    python bench/soak.py --url http://127.0.0.1:18000/v1 --key rk-... --pid 1234 --minutes 10 -c 16

Prints one JSON line per sample and a summary: RSS after warm-up, at the end, peak, growth %.
Bounded: stops after --minutes, talks only to the given loopback URL.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import time

import httpx


def rss_mib(pid: int) -> float:
    """RSS of `pid` and its children (MiB)."""
    total = 0
    pids = [pid]
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            pids += [int(c) for c in f.read().split()]
    except OSError:
        pass
    for p in pids:
        try:
            with open(f"/proc/{p}/status") as f:
                total += next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
        except OSError:
            pass
    return total / 1024


async def worker(client: httpx.AsyncClient, args, stop: float, counts: dict[str, int]) -> None:
    rng = random.Random(os.getpid() ^ id(counts))
    body = {"model": args.model, "messages": [{"role": "user", "content": "Tell me something."}]}
    while time.monotonic() < stop:
        kind = rng.choice(("stream", "stream", "unary", "abandon"))
        try:
            if kind == "unary":
                r = await client.post("/chat/completions", json=body)
                counts[f"unary_{r.status_code}"] = counts.get(f"unary_{r.status_code}", 0) + 1
                continue
            async with client.stream("POST", "/chat/completions", json={**body, "stream": True}) as r:
                n = 0
                async for line in r.aiter_lines():
                    n += line.startswith("data:")
                    if kind == "abandon" and n >= 3:
                        break  # the client walks away mid-stream
            counts[kind] = counts.get(kind, 0) + 1
        except httpx.HTTPError:
            counts["errors"] = counts.get("errors", 0) + 1


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--model", default="gpt-4o-mini")
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--warmup", type=float, default=60.0, help="seconds before the baseline sample")
    ap.add_argument("-c", "--concurrency", type=int, default=16)
    ap.add_argument("--every", type=float, default=10.0)
    args = ap.parse_args()
    stop = time.monotonic() + args.minutes * 60
    counts: dict[str, int] = {}
    samples: list[tuple[float, float]] = []
    async with httpx.AsyncClient(base_url=args.url, headers={"Authorization": f"Bearer {args.key}"},
                                 timeout=60, limits=httpx.Limits(max_connections=args.concurrency * 2)) as client:
        tasks = [asyncio.create_task(worker(client, args, stop, counts)) for _ in range(args.concurrency)]
        start = time.monotonic()
        while time.monotonic() < stop:
            await asyncio.sleep(args.every)
            t = time.monotonic() - start
            samples.append((t, rss_mib(args.pid)))
            print(json.dumps({"t": round(t), "rss_mib": round(samples[-1][1], 1), **counts}), flush=True)
        await asyncio.gather(*tasks)
    base = next((r for t, r in samples if t >= args.warmup), samples[0][1])
    end = samples[-1][1]
    print(json.dumps({"summary": True, "rss_after_warmup_mib": round(base, 1), "rss_end_mib": round(end, 1),
                      "rss_peak_mib": round(max(r for _, r in samples), 1),
                      "growth_pct": round((end - base) / base * 100, 1), **counts}))


if __name__ == "__main__":
    asyncio.run(main())
