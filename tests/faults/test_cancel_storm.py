"""SPEC §9 under client cancellation: every admitted request ends with exactly one usage record and
one settlement, whatever await point the cancellation hits (including 0 ms after sending).

Exact counts: records written == requests admitted == settlements, reserved credit back to 0, no
live hold, every concurrency slot free."""

from __future__ import annotations

import asyncio
import random
from decimal import Decimal

import grpc
from tests_support import make_rest, service

from raven.v1 import chat_pb2, chat_service_pb2, chat_service_pb2_grpc
from raven_service.policy.auth import create_key

CHAT = "raven/local-chat"
CONCURRENCY = 1000
PROMPT = "Tell me a long story about a lighthouse keeper."


async def _credit_key(services) -> tuple[str, str]:
    key, secret = await create_key(services.store, name="storm", rpm=100000, concurrency=CONCURRENCY,
                                   credits=Decimal("1000"))
    return key.id, secret


async def _settled_books(services, key_id: str) -> list:
    """Waits until the instance is quiet, then asserts the invariants and returns the records."""
    admitter = services.admitter
    for _ in range(200):  # in-flight requests finish their cancellation (bounded, no sleep-based timing)
        await admitter.drain()
        if admitter.settled_count == admitter.admitted_count:
            break
        await asyncio.sleep(0.01)
    await admitter.drain()
    assert await services.usage.flush(10.0)
    records = [r async for r in services.store.export_usage() if r.key_id == key_id]
    assert admitter.settled_count == admitter.admitted_count
    assert len(records) == admitter.admitted_count, "one usage record per admitted request"
    assert len({r.id for r in records}) == len(records)
    key = await services.store.get_key(key_id)
    assert key is not None
    assert key.credits_reserved == 0 and await services.store.list_holds(key_id) == []
    assert key.credits_used == sum((r.cost for r in records), Decimal(0))
    # every slot is free again: the whole concurrency can be taken at once
    leases = [await services.limiter.acquire_slot(key_id, CONCURRENCY) for _ in range(CONCURRENCY)]
    assert all(lease is not None for lease in leases)
    for lease in leases:
        await lease.release()
    return records


async def test_grpc_cancel_storm_settles_every_admitted_request(tmp_path) -> None:
    rng = random.Random(8)
    async with service(tmp_path, local_tokens_per_second=400.0) as svc:
        key_id, secret = await _credit_key(svc.services)
        meta = (("authorization", f"Bearer {secret}"),)
        async with grpc.aio.insecure_channel(svc.target) as channel:
            # Connected first: the storm is meant for requests in flight, and a connection still
            # being set up (or backing off after a refused first attempt) could swallow all of it.
            await asyncio.wait_for(channel.channel_ready(), timeout=10)
            stub = chat_service_pb2_grpc.ChatServiceStub(channel)
            msgs = [chat_pb2.ChatMessage(role="user", content=PROMPT)]

            async def one(i: int) -> None:
                delay = rng.choice([0.0, 0.0, 0.001, 0.005, 0.02, 0.05, 0.1, 0.3])
                if i % 4 == 1:
                    # Cancelled after its first message: certainly admitted, whatever the timing
                    # (twice in CI the random delays alone all fell before admission).
                    call = stub.StreamChatCompletion(
                        chat_service_pb2.StreamChatCompletionRequest(model=CHAT, messages=msgs, max_tokens=200),
                        metadata=meta)
                    await call.read()
                    call.cancel()
                    return
                if i % 2:
                    call = stub.StreamChatCompletion(
                        chat_service_pb2.StreamChatCompletionRequest(model=CHAT, messages=msgs, max_tokens=200),
                        metadata=meta)

                    async def read() -> None:
                        async for _ in call:
                            pass

                    reader = asyncio.ensure_future(read())
                else:
                    call = stub.CreateChatCompletion(
                        chat_service_pb2.CreateChatCompletionRequest(model=CHAT, messages=msgs, max_tokens=200),
                        metadata=meta)
                    reader = asyncio.ensure_future(call)
                if delay:
                    await asyncio.sleep(delay)
                call.cancel()
                try:
                    await reader
                except (asyncio.CancelledError, grpc.aio.AioRpcError):
                    pass

            # One whole request first, as in the REST storm: the key's credit slice is leased and the
            # path is warm, so the storm's delays reach requests in flight.
            await stub.CreateChatCompletion(
                chat_service_pb2.CreateChatCompletionRequest(model=CHAT, messages=msgs, max_tokens=5), metadata=meta)
            await asyncio.gather(*(one(i) for i in range(120)))
            records = await _settled_books(svc.services, key_id)
        statuses = {r.status for r in records}
        assert "cancelled" in statuses  # the storm did hit in-flight requests
        assert svc.services.admitter.admitted_count >= 31  # the warm-up and the streams cancelled mid-way


async def test_rest_cancel_storm_settles_every_admitted_request(tmp_path) -> None:
    rng = random.Random(9)
    async with make_rest(tmp_path, link="inprocess", local_tokens_per_second=400.0) as rest:
        services = rest.svc.services
        key_id, secret = await _credit_key(services)
        body = {"model": CHAT, "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 200}

        async def one(i: int) -> None:
            delay = rng.choice([0.0, 0.0, 0.001, 0.005, 0.02, 0.05, 0.1, 0.3])

            async def call() -> None:
                payload = body | {"stream": bool(i % 2)}
                async with rest.http.stream("POST", "/v1/chat/completions", json=payload,
                                            headers=rest.auth(secret)) as resp:
                    async for _ in resp.aiter_raw():
                        pass

            task = asyncio.ensure_future(call())
            if delay:
                await asyncio.sleep(delay)
            else:
                await asyncio.sleep(0)  # the request has been sent, nothing more
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass

        # One whole request first: the key's credit slice is leased and the path is warm, so the
        # storm's delays (up to 0.3 s) reach requests in flight however slow the machine (without
        # it, a slow first lease could let every request be cancelled before admission).
        warm = await rest.http.post("/v1/chat/completions", json=body | {"max_tokens": 5}, headers=rest.auth(secret))
        assert warm.status_code == 200, warm.text
        await asyncio.gather(*(one(i) for i in range(120)))
        records = await _settled_books(services, key_id)
        assert "cancelled" in {r.status for r in records}


async def test_a_provider_bug_is_recorded_as_failed_not_cancelled(tmp_path) -> None:
    async with service(tmp_path) as svc:
        key_id, secret = await _credit_key(svc.services)

        async def broken(*_args, **_kwargs):
            raise ZeroDivisionError("a bug inside a provider")
            yield  # pragma: no cover

        svc.services.router.stream = broken  # the router's collaborator misbehaving, not a mock of the unit under test
        async with grpc.aio.insecure_channel(svc.target) as channel:
            stub = chat_service_pb2_grpc.ChatServiceStub(channel)
            call = stub.StreamChatCompletion(chat_service_pb2.StreamChatCompletionRequest(
                model=CHAT, messages=[chat_pb2.ChatMessage(role="user", content="hi")]),
                metadata=(("authorization", f"Bearer {secret}"),))
            try:
                async for _ in call:
                    pass
            except grpc.aio.AioRpcError as exc:
                assert exc.code() == grpc.StatusCode.INTERNAL
        records = await _settled_books(svc.services, key_id)
        assert [(r.status, r.error) for r in records] == [("failed", "internal error (ZeroDivisionError)")]
