"""Where a chat completion's CPU goes, without HTTP in front: the servicer through the in-process
channel (what the REST gateway calls) against the fake upstream, or aiohttp alone posting the same
request. Prints CPU microseconds per call (process time over the measured calls).

    python3 ../shared/bench/fake_upstream.py --port 18080 &        # the shared harness's upstream
    .venv/bin/raven keys create --name b --credits 1000000 --data-dir /tmp/sp --config bench/raven-bench.toml
    taskset -c 0 .venv/bin/python bench/service_path.py --data-dir /tmp/sp --key rk-... --mode service
    taskset -c 0 .venv/bin/python bench/service_path.py --data-dir /tmp/sp --key rk-... --mode aiohttp

A benchmark, not a test: the numbers depend on the machine; compare the two modes in one sitting.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from pathlib import Path

import aiohttp
import uvloop

from raven.v1 import chat_pb2, chat_service_pb2, chat_service_pb2_grpc
from raven_service.api.inproc import HandlerRegistry, InProcessChannel
from raven_service.config import load_settings
from raven_service.server import build_services, register_servicers, settle_heap

HERE = Path(__file__).resolve().parent
BODY = b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello"}],"max_tokens":64}'


async def main(args: argparse.Namespace) -> None:
    os.environ.setdefault("RAVEN_BENCH_UPSTREAM_KEY", "dummy")
    settings = load_settings(str(HERE / "raven-bench.toml"), {"data_dir": args.data_dir})
    services = await build_services(settings)
    registry = HandlerRegistry()
    register_servicers(services, registry)
    services.observer.wrap_registry(registry.handlers)
    stub = chat_service_pb2_grpc.ChatServiceStub(InProcessChannel(registry))
    request = chat_service_pb2.CreateChatCompletionRequest(
        model="gpt-4o-mini", max_tokens=64, messages=[chat_pb2.ChatMessage(role="user", content="Say hello")])
    metadata = (("authorization", "Bearer " + args.key), ("x-request-id", "bench"),
                ("x-raven-client-addr", "127.0.0.1"))
    session = aiohttp.ClientSession()
    headers = {"Authorization": "Bearer dummy", "Content-Type": "application/json"}

    async def service_call() -> None:
        await stub.CreateChatCompletion(request, metadata=metadata, timeout=600)

    async def aiohttp_call() -> None:
        async with session.post(args.upstream + "/chat/completions", data=BODY, headers=headers) as resp:
            await resp.read()

    one = service_call if args.mode == "service" else aiohttp_call

    async def worker(n: int) -> None:
        for _ in range(n):
            await one()

    try:
        await asyncio.gather(*(worker(50) for _ in range(args.concurrency)))  # warm-up
        settle_heap()  # as `raven serve` does once serving
        cpu, wall = time.process_time(), time.perf_counter()
        per = args.calls // args.concurrency
        await asyncio.gather(*(worker(per) for _ in range(args.concurrency)))
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        n = per * args.concurrency
        print(f"{args.mode}: {n} calls at c={args.concurrency}: {cpu / n * 1e6:.0f} us CPU per call, "
              f"{n / wall:.0f} calls/s")
    finally:
        await session.close()
        await services.close()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", required=True, help="a data dir holding the key (raven keys create)")
    ap.add_argument("--key", required=True)
    ap.add_argument("--mode", choices=("service", "aiohttp"), default="service")
    ap.add_argument("--upstream", default="http://127.0.0.1:18080/v1")
    ap.add_argument("--calls", type=int, default=4000)
    ap.add_argument("-c", "--concurrency", type=int, default=16)
    uvloop.run(main(ap.parse_args()))
