"""Closed-loop gRPC load from Python: N concurrent grpc.aio callers of CreateChatCompletion (or the stream).

    python bench/grpc_load.py --target 127.0.0.1:50051 --key rk-... --model gpt-4o-mini -c 1,16,64 -d 10

A client-side example (how a Python service would call Raven), not the benchmark's measuring client:
grpc.aio adds about 0.5-1 ms of its own per call, so the figures in bench/results come from C clients
(bench/grpc_h2load.py for unary calls, bench/grpc_stream.py for streams).

Prints one JSON line per concurrency level: rps, p50/p90/p99 latency (ms), errors.
For streams (--stream) the latency is the time to the first content message.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time

import grpc

from raven.v1 import chat_pb2, chat_service_pb2, chat_service_pb2_grpc


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(p / 100 * len(values)))]


async def level(stub, meta, args, concurrency: int, duration: float) -> dict:
    lat: list[float] = []
    errors = 0
    deadline = time.perf_counter() + duration
    msg = [chat_pb2.ChatMessage(role="user", content="Say hello.")]

    async def worker() -> None:
        nonlocal errors
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            try:
                if args.stream:
                    first = None
                    req = chat_service_pb2.StreamChatCompletionRequest(model=args.model, messages=msg)
                    async for m in stub.StreamChatCompletion(req, metadata=meta):
                        if first is None and m.choices:
                            first = time.perf_counter() - t0
                    lat.append(first or 0.0)
                else:
                    await stub.CreateChatCompletion(
                        chat_service_pb2.CreateChatCompletionRequest(model=args.model, messages=msg), metadata=meta)
                    lat.append(time.perf_counter() - t0)
            except grpc.aio.AioRpcError:
                errors += 1

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - start
    return {"concurrency": concurrency, "requests": len(lat), "errors": errors, "rps": round(len(lat) / elapsed, 1),
            "p50_ms": round(pct(lat, 50) * 1000, 3), "p90_ms": round(pct(lat, 90) * 1000, 3),
            "p99_ms": round(pct(lat, 99) * 1000, 3),
            "mean_ms": round(statistics.fmean(lat) * 1000, 3) if lat else None}


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--target", default="127.0.0.1:50051")
    ap.add_argument("--key", required=True)
    ap.add_argument("--model", default="gpt-4o-mini")
    ap.add_argument("-c", "--concurrency", default="1,16,64")
    ap.add_argument("-d", "--duration", type=float, default=10.0)
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--stream", action="store_true")
    args = ap.parse_args()
    meta = (("authorization", f"Bearer {args.key}"),)
    async with grpc.aio.insecure_channel(args.target) as ch:
        stub = chat_service_pb2_grpc.ChatServiceStub(ch)
        await level(stub, meta, args, 16, args.warmup)
        for c in (int(x) for x in args.concurrency.split(",")):
            print(json.dumps({"path": "grpc-stream" if args.stream else "grpc", **await level(
                stub, meta, args, c, args.duration)}), flush=True)


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(main())
