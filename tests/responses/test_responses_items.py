"""GET /v1/responses/{id}/input_items and DELETE /v1/responses/{id} through the official openai SDK
(over a real gRPC channel and the in-process link), and ResponseService's gRPC counterparts: the
whole input of a chain, its order, its pages, per-key deletion and its effect on chaining."""

from __future__ import annotations

import grpc
import openai
import pytest

from raven.v1 import response_service_pb2 as rs
from raven.v1 import response_service_pb2_grpc as rs_grpc

pytestmark = pytest.mark.timeout(30)

CHAT = "raven/local-chat"


def _text(item) -> str:
    return "".join(part.text for part in item.content)


async def test_input_items_hold_the_whole_chain_newest_first(rest) -> None:
    client = rest.sdk()
    first = await client.responses.create(model=CHAT, input=[{"role": "user", "content": "echo: one"}])
    second = await client.responses.create(model=CHAT, input="echo: two", previous_response_id=first.id)
    listed = await client.responses.input_items.list(second.id)
    items = listed.data
    # newest first: this request's message, then the first response's output, then its input
    assert [(i.type, i.role) for i in items] == [("message", "user"), ("message", "assistant"), ("message", "user")]
    assert [_text(i) for i in items] == ["echo: two", "one", "echo: one"]
    assert [p.type for p in items[0].content] == ["input_text"]
    assert items[1].id == first.output[0].id  # an output item keeps the id the response gave it
    ids = [i.id for i in items]
    assert all(ids) and len(set(ids)) == 3
    assert (listed.first_id, listed.last_id, listed.has_more) == (ids[0], ids[-1], False)
    oldest_first = await client.responses.input_items.list(second.id, order="asc")
    assert [i.id for i in oldest_first.data] == ids[::-1]
    again = await client.responses.input_items.list(second.id)  # ids are stored, not made up per call
    assert [i.id for i in again.data] == ids


async def test_pages_follow_after_until_has_more_is_false(rest) -> None:
    client = rest.sdk()
    turns = ["echo: a", "echo: b", "echo: c"]
    previous = None
    for text in turns:
        r = await client.responses.create(model=CHAT, input=text, previous_response_id=previous)
        previous = r.id
    assert previous is not None
    whole = (await client.responses.input_items.list(previous, order="asc", limit=100)).data
    assert len(whole) == 5  # three inputs and the two outputs between them
    seen: list[str] = []
    after = None
    while True:
        page = await client.responses.input_items.list(previous, order="asc", limit=2,
                                                       **({"after": after} if after else {}))
        assert len(page.data) <= 2
        seen += [i.id for i in page.data]
        if not page.has_more:
            break
        after = page.last_id
    assert seen == [i.id for i in whole]
    paged = [i.id async for i in client.responses.input_items.list(previous, order="asc", limit=2)]
    assert paged == seen  # the SDK's own auto-pagination follows last_id the same way


async def test_a_bare_string_in_an_input_list_is_a_message_that_chains(rest) -> None:
    client = rest.sdk()
    first = await client.responses.create(model=CHAT, input=["echo: bare"])  # type: ignore[list-item]
    items = (await client.responses.input_items.list(first.id)).data
    assert [(i.type, i.role, _text(i)) for i in items] == [("message", "user", "echo: bare")]
    second = await client.responses.create(model=CHAT, input="echo: next", previous_response_id=first.id)
    assert second.output_text == "next"
    nulled = await client.responses.create(model=CHAT, input=[{"role": "user", "content": "echo: n", "id": None}])
    (item,) = (await client.responses.input_items.list(nulled.id)).data
    assert item.id == f"msg_{nulled.id.removeprefix('resp_')}_in0"  # a null id is no id: one is given


@pytest.mark.parametrize(("params", "param"), [
    ({"limit": 0}, "limit"), ({"limit": 101}, "limit"), ({"order": "sideways"}, "order"),
    ({"after": "msg_nope"}, "after"),
])
async def test_bad_list_parameters_are_400_naming_them(rest, params: dict, param: str) -> None:
    client = rest.sdk()
    r = await client.responses.create(model=CHAT, input="echo: x")
    with pytest.raises(openai.BadRequestError) as err:
        await client.responses.input_items.list(r.id, **params)
    assert err.value.body["param"] == param


async def test_delete_is_per_key_and_ends_the_chain(rest) -> None:
    client = rest.sdk()
    mine = await client.responses.create(model=CHAT, input="echo: doomed")
    other = rest.sdk(rest.svc.admin)
    with pytest.raises(openai.NotFoundError):
        await other.responses.delete(mine.id)
    assert (await client.responses.retrieve(mine.id)).id == mine.id  # another key's delete touched nothing
    raw = await rest.http.delete(f"/v1/responses/{mine.id}", headers=rest.auth())
    assert raw.status_code == 200 and raw.json() == {"id": mine.id, "object": "response", "deleted": True}
    with pytest.raises(openai.NotFoundError):
        await client.responses.retrieve(mine.id)
    with pytest.raises(openai.NotFoundError):
        await client.responses.input_items.list(mine.id)
    with pytest.raises(openai.NotFoundError) as err:
        await client.responses.create(model=CHAT, input="hi", previous_response_id=mine.id)
    assert err.value.body["code"] == "previous_response_not_found"
    with pytest.raises(openai.NotFoundError):
        await client.responses.delete(mine.id)  # once only


async def test_grpc_list_and_delete(rest) -> None:
    r = await rest.sdk().responses.create(model=CHAT, input="echo: over grpc")
    async with grpc.aio.insecure_channel(rest.svc.target) as channel:
        stub = rs_grpc.ResponseServiceStub(channel)
        meta = rest.svc.meta()
        page = await stub.ListResponseInputItems(rs.ListResponseInputItemsRequest(id=r.id), metadata=meta)
        assert len(page.items) == 1 and '"echo: over grpc"' in page.items[0] and not page.has_more
        assert page.first_id == page.last_id and page.first_id.startswith("msg_")
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.ListResponseInputItems(rs.ListResponseInputItemsRequest(id=r.id, limit=500), metadata=meta)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        gone = await stub.DeleteResponse(rs.DeleteResponseRequest(id=r.id), metadata=meta)
        assert (gone.id, gone.deleted) == (r.id, True)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.DeleteResponse(rs.DeleteResponseRequest(id=r.id), metadata=meta)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.DeleteResponse(rs.DeleteResponseRequest(id="resp_x"))
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
