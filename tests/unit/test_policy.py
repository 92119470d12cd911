"""In-process limits, pricing and request validation (pure, no I/O)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from raven_service.accounting.pricing import chat_cost, fmt
from raven_service.app.validation import validate_chat
from raven_service.core.errors import InvalidArgument
from raven_service.core.types import ChatRequest, Message, ModelInfo, Route, Tool, ToolChoice
from raven_service.policy.auth import Unauthenticated, bearer_secret, new_secret
from raven_service.policy.ratelimit import InProcessLimiter


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


async def test_rpm_window_admits_a_burst_then_resets():
    clock = Clock()
    limiter = InProcessLimiter(clock)
    decisions = [await limiter.hit_rpm("k", 3) for _ in range(5)]
    assert [d.allowed for d in decisions] == [True, True, True, False, False]
    assert [d.remaining for d in decisions[:3]] == [2, 1, 0]
    assert 0 < decisions[-1].reset_after <= 60
    clock.t += 61
    assert (await limiter.hit_rpm("k", 3)).allowed
    assert (await limiter.peek_rpm("k", 3)).remaining == 2


async def test_concurrency_slots_are_returned():
    limiter = InProcessLimiter()
    a = await limiter.acquire_slot("k", 1)
    assert a is not None and await limiter.acquire_slot("k", 1) is None
    await a.release()
    await a.release()  # idempotent: must not free a second slot
    b = await limiter.acquire_slot("k", 1)
    assert b is not None and await limiter.acquire_slot("k", 1) is None


def test_cost_is_an_exact_decimal():
    model = ModelInfo(id="m", routes=(Route(provider="p", model="m"),), price_input_per_mtok=Decimal("0.28"),
                      price_output_per_mtok=Decimal("0.42"))
    cost = chat_cost(model, 12, 0)
    assert cost == Decimal("0.00000336") and fmt(cost) == "0.00000336"
    assert chat_cost(model, 1_000_000, 1_000_000) == Decimal("0.70")


def test_secrets_and_bearer_parsing():
    secret = new_secret()
    assert secret.startswith("rk-") and len(secret) >= 35
    assert bearer_secret(f"Bearer {secret}") == secret
    for bad in (None, "", "Basic abc", "Bearer "):
        with pytest.raises(Unauthenticated):
            bearer_secret(bad)


def _req(**kw) -> ChatRequest:
    return ChatRequest(model="m", messages=(Message(role="user", content="hi"),), **kw)


@pytest.mark.parametrize(
    ("kw", "param"),
    [
        ({"temperature": 2.01}, "temperature"),
        ({"temperature": float("nan")}, "temperature"),
        ({"top_p": 0.0}, "top_p"),
        ({"frequency_penalty": -2.5}, "frequency_penalty"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"stop": ("a", "b", "c", "d", "e")}, "stop"),
        ({"tools": (Tool(name="bad name!"),)}, "tools[0].function.name"),
        ({"tools": (Tool(name="f"),), "tool_choice": ToolChoice(mode="function", name="g")}, "tool_choice"),
        ({"tool_choice": ToolChoice(mode="required")}, "tool_choice"),
    ],
)
def test_validation_rejects_with_the_param(kw, param):
    with pytest.raises(InvalidArgument) as ei:
        validate_chat(_req(**kw))
    assert ei.value.param == param


def test_validation_accepts_the_edges():
    validate_chat(_req(temperature=0.0, top_p=1.0, max_tokens=1, frequency_penalty=2.0, stop=("x",) * 4))
    validate_chat(ChatRequest(model="m", messages=(
        Message(role="user", content="hi"),
        Message(role="assistant", content=None, tool_calls=()),
        Message(role="tool", content="{}", tool_call_id="call_1"),
    )))
    with pytest.raises(InvalidArgument) as ei:
        validate_chat(ChatRequest(model="m", messages=(Message(role="tool", content="{}"),)))
    assert ei.value.param == "messages[0].tool_call_id"
