"""GET /v1/usage and GET /v1/generations end to end: generations made through the official
openai SDK, read back over REST (httpx, both gateway links) and over gRPC (a real channel).

Expected numbers are computed from the usage records the service wrote (exported from the store),
so every sum, count and (exact, small-range) percentile is checked to the unit."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import AsyncIterator
from decimal import Decimal

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from tests_support import Rest, make_rest, usage_records

from raven.v1 import usage_service_pb2, usage_service_pb2_grpc
from raven_service.core.types import KeyPatch
from raven_service.policy.auth import create_key

CHAT = "raven/local-chat"


def nearest_rank(values: list[int], q: float) -> int | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


class World:
    def __init__(self, rest: Rest, search: tuple[str, str], ads: tuple[str, str]) -> None:
        self.rest = rest
        self.search_id, self.search = search
        self.ads_id, self.ads = ads
        self.ids: dict[str, list[str]] = {}
        self.user_id = ""

    async def chat(self, key: str, n: int, text: str = "echo: hi") -> list[str]:
        sdk = self.rest.sdk(key)
        out = []
        for i in range(n):
            c = await sdk.chat.completions.create(model=CHAT, messages=[{"role": "user", "content": f"{text} {i}"}])
            out.append(c.id)
        return out

    async def get(self, path: str, key: str, **params: str):
        return await self.rest.http.get(path, params=params, headers=self.rest.auth(key))


@pytest.fixture(params=["grpc", "inprocess"])
async def world(tmp_path, request) -> AsyncIterator[World]:
    async with make_rest(tmp_path, link=request.param) as rest:
        store = rest.svc.services.store
        s_key, s_secret = await create_key(store, name="search", rpm=1000, concurrency=10,
                                           patch=KeyPatch(metadata={"team": "search", "env": "prod"}))
        a_key, a_secret = await create_key(store, name="ads", rpm=1000, concurrency=10,
                                           patch=KeyPatch(metadata={"team": "ads"}))
        w = World(rest, (s_key.id, s_secret), (a_key.id, a_secret))
        w.user_id = next(k.id for k in await store.list_keys() if k.name == "user")
        w.ids["search"] = await w.chat(s_secret, 3)
        w.ids["ads"] = await w.chat(a_secret, 2, "echo: a longer prompt for ads")
        w.ids["user"] = await w.chat(rest.svc.user, 1)
        yield w


def expected_row(records, **extra):
    latencies = [r.latency_ms for r in records]
    ttfts = [r.ttft_ms for r in records if r.ttft_ms > 0]
    return {**extra, "requests": len(records), "errors": sum(r.status == "failed" for r in records),
            "prompt_tokens": sum(r.prompt_tokens for r in records),
            "completion_tokens": sum(r.completion_tokens for r in records),
            "cost": str(sum((r.cost for r in records), Decimal(0))),
            "latency_ms_p50": nearest_rank(latencies, 0.5), "latency_ms_p95": nearest_rank(latencies, 0.95),
            "ttft_ms_p50": nearest_rank(ttfts, 0.5)}


async def test_admin_groups_by_tag_key_and_model_with_exact_numbers(world: World) -> None:
    records = await usage_records(world.rest.svc.services)
    assert len(records) == 6
    admin = world.rest.svc.admin
    r = await world.get("/v1/usage", admin, group_by="tag:team")
    assert r.status_code == 200, r.text
    assert "x-ratelimit-limit-requests" in r.headers
    by_team = {None: [x for x in records if not x.tags], "ads": [x for x in records if x.key_id == world.ads_id],
               "search": [x for x in records if x.key_id == world.search_id]}
    assert r.json() == {"data": [expected_row(by_team[t], tag=t) for t in (None, "ads", "search")]}

    r = await world.get("/v1/usage", admin, group_by="key,model")
    rows = r.json()["data"]
    assert [(row["key_id"], row["model"], row["requests"]) for row in rows] == sorted(
        [(world.search_id, CHAT, 3), (world.ads_id, CHAT, 2), (world.user_id, CHAT, 1)])
    assert all(set(row) == {"key_id", "model", "requests", "errors", "prompt_tokens", "completion_tokens", "cost",
                            "latency_ms_p50", "latency_ms_p95", "ttft_ms_p50"} for row in rows)

    r = await world.get("/v1/usage", admin)  # no grouping: one row of totals over every key
    assert r.json() == {"data": [expected_row(records)]}
    day = dt.datetime.fromtimestamp(records[0].created_at, dt.UTC).strftime("%Y-%m-%d")
    r = await world.get("/v1/usage", admin, group_by="day,provider", key_id=world.ads_id)
    assert r.json() == {"data": [expected_row(by_team["ads"], day=day, provider="local")]}


async def test_a_key_sees_only_its_own_usage(world: World) -> None:
    records = await usage_records(world.rest.svc.services)
    mine = [x for x in records if x.key_id == world.search_id]
    r = await world.get("/v1/usage", world.search, group_by="model")
    assert r.json() == {"data": [expected_row(mine, model=CHAT)]}
    r = await world.get("/v1/usage", world.search, key_id=world.search_id, group_by="tag:env")
    assert r.json() == {"data": [expected_row(mine, tag="prod")]}
    for other in (world.ads_id, "key_nope"):
        r = await world.get("/v1/usage", world.search, key_id=other)
        assert r.status_code == 404
        assert r.json()["error"]["code"] == "key_not_found"
    r = await world.get("/v1/usage", world.rest.svc.admin, key_id="key_nope")
    assert r.status_code == 404


async def test_periods_bound_the_usage(world: World) -> None:
    records = await usage_records(world.rest.svc.services)
    cut = sorted(x.created_at for x in records)[3]  # the 4th record starts the second half
    stamp = dt.datetime.fromtimestamp(cut, dt.UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
    admin = world.rest.svc.admin
    before = (await world.get("/v1/usage", admin, end=stamp)).json()["data"]
    after = (await world.get("/v1/usage", admin, start=stamp)).json()["data"]
    # the stamp is cut to microseconds, so it may fall a hair before the record: count both sides
    assert before[0]["requests"] + after[0]["requests"] == 6 and before[0]["requests"] in (3, 4)
    r = await world.get("/v1/usage", admin, start="2030-01-01T00:00:00+02:00")
    assert r.json() == {"data": []}


@pytest.mark.parametrize(("params", "param"), [
    ({"start": "yesterday"}, "start"),
    ({"end": "2026-01-01"}, "end"),
    ({"start": "2026-13-01T00:00:00Z"}, "start"),
    ({"start": "2026-01-02T00:00:00Z", "end": "2026-01-01T00:00:00Z"}, "end"),
    ({"group_by": "model,week"}, "group_by"),
    ({"group_by": "tag:"}, "group_by"),
    ({"group_by": "tag:team,tag:env"}, "group_by"),
    ({"group-by": "model"}, "group-by"),
])
async def test_bad_usage_queries_are_400_naming_the_parameter(world: World, params, param) -> None:
    r = await world.rest.http.get("/v1/usage", params=params, headers=world.rest.auth(world.rest.svc.admin))
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param


async def test_generations_page_newest_first_without_gaps_or_repeats(world: World) -> None:
    user = world.rest.svc.user
    made = world.ids["user"] + await world.chat(user, 6)  # 7 of the caller's own
    pages, after = [], None
    while True:
        params = {"limit": "3"} | ({"after": after} if after else {})
        body = (await world.get("/v1/generations", user, **params)).json()
        pages.append([g["id"] for g in body["data"]])
        assert body["has_more"] == (body["next"] is not None)
        if not body["has_more"]:
            break
        after = body["next"]
    assert [len(p) for p in pages] == [3, 3, 1]
    assert [i for p in pages for i in p] == list(reversed(made))
    one = (await world.get("/v1/generations", user, limit="1")).json()["data"][0]
    single = (await world.get("/v1/generation", user, id=one["id"])).json()["data"]
    assert one == single  # each row is shaped like GET /v1/generation

    admin = world.rest.svc.admin
    everyone = (await world.get("/v1/generations", admin, limit="100")).json()
    assert len(everyone["data"]) == 12 and everyone["has_more"] is False and everyone["next"] is None
    ads = (await world.get("/v1/generations", admin, key_id=world.ads_id)).json()["data"]
    assert [g["id"] for g in ads] == list(reversed(world.ids["ads"]))
    assert (await world.get("/v1/generations", user, status="failed")).json()["data"] == []
    assert len((await world.get("/v1/generations", user, model=CHAT, status="completed")).json()["data"]) == 7
    assert (await world.get("/v1/generations", user, model="raven/other")).json()["data"] == []
    first = everyone["data"][-1]["created_at"]
    since = dt.datetime.fromtimestamp(first + 3600, dt.UTC).isoformat().replace("+00:00", "Z")
    assert (await world.get("/v1/generations", admin, since=since)).json()["data"] == []
    assert len((await world.get("/v1/generations", admin, until=since)).json()["data"]) == 12


@pytest.mark.parametrize(("params", "status", "param"), [
    ({"key_id": "key_other"}, 404, "key_id"),
    ({"after": "not-a-cursor"}, 400, "after"),
    ({"status": "done"}, 400, "status"),
    ({"limit": "101"}, 400, "limit"),
    ({"limit": "ten"}, 400, "limit"),
    ({"since": "2026-01-01T00:00:00"}, 400, "since"),
    ({"page": "2"}, 400, "page"),
])
async def test_bad_generation_queries(world: World, params, status, param) -> None:
    r = await world.rest.http.get("/v1/generations", params=params, headers=world.rest.auth(world.ads))
    assert r.status_code == status, r.text
    assert r.json()["error"]["param"] == (param if status == 400 else None)


async def test_grpc_query_usage_and_list_generations(world: World) -> None:
    svc = world.rest.svc
    async with grpc.aio.insecure_channel(svc.target) as channel:
        stub = usage_service_pb2_grpc.UsageServiceStub(channel)
        reply = await stub.QueryUsage(usage_service_pb2.QueryUsageRequest(group_by=["tag:team", "key"]),
                                      metadata=svc.meta(svc.admin))
        assert list(reply.group_by) == ["key", "tag:team"]
        got = sorted((row.key_id, row.tag if row.HasField("tag") else None, row.requests) for row in reply.rows)
        assert got == sorted([(world.search_id, "search", 3), (world.ads_id, "ads", 2),
                              (world.user_id, None, 1)])
        assert all(row.exact_percentiles and row.HasField("latency_ms_p50") for row in reply.rows)
        mine = await stub.QueryUsage(usage_service_pb2.QueryUsageRequest(), metadata=svc.meta(world.ads))
        assert [r.requests for r in mine.rows] == [2]

        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.QueryUsage(usage_service_pb2.QueryUsageRequest(group_by=["hour"]), metadata=svc.meta())
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        status = rpc_status.from_call(err.value)
        assert status is not None
        violations = [error_details_pb2.BadRequest.FromString(d.value) for d in status.details
                      if d.Is(error_details_pb2.BadRequest.DESCRIPTOR)]
        assert violations[0].field_violations[0].field == "group_by"
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.QueryUsage(usage_service_pb2.QueryUsageRequest(key_id=world.search_id),
                                  metadata=svc.meta(world.ads))
        assert err.value.code() == grpc.StatusCode.NOT_FOUND

        page = await stub.ListGenerations(usage_service_pb2.ListGenerationsRequest(limit=2),
                                          metadata=svc.meta(world.search))
        assert [g.id for g in page.generations] == list(reversed(world.ids["search"]))[:2] and page.has_more
        rest = await stub.ListGenerations(usage_service_pb2.ListGenerationsRequest(limit=2, after=page.next),
                                          metadata=svc.meta(world.search))
        assert [g.id for g in rest.generations] == [world.ids["search"][0]]
        assert not rest.has_more and rest.next == ""
        assert all(g.key_id == world.search_id for g in [*page.generations, *rest.generations])


async def test_openapi_documents_the_usage_routes(world: World) -> None:
    doc = (await world.rest.http.get("/openapi.json")).json()
    usage = {p["name"] for p in doc["paths"]["/v1/usage"]["get"]["parameters"]}
    generations = {p["name"] for p in doc["paths"]["/v1/generations"]["get"]["parameters"]}
    assert usage == {"start", "end", "group_by", "key_id"}
    assert generations == {"key_id", "model", "status", "since", "until", "limit", "after"}
