"""When the local chat model calls tools, which ones, and with what arguments.

- tool_choice "none" (or no tools): never;
- "function" (named): that tool, whatever the conversation says;
- "required": the tool that best matches the last user message (the first tool if none does);
- "auto" (or unset): only when the last message is a user message that mentions tools, by
  name or by a telling word of their description ("weather"); every mentioned tool is called
  (parallel calls). After a tool result, the model answers in text instead.

Arguments are generated from each tool's `parameters` JSON Schema and validate against it.
"""

from __future__ import annotations

import json
import random
import re
import string
from collections.abc import Sequence

from raven_service.core.errors import InvalidArgument
from raven_service.core.types import ChatRequest, Tool, ToolCall, function_tools
from raven_service.providers.local._schema import generate_instance
from raven_service.providers.local._text import echo_text, last_user_text
from raven_service.providers.local._words import STOPWORDS, analyze

__all__ = ["plan_tool_calls", "select_tools"]

_MAX_PARALLEL = 3
_ID_ALPHABET = string.ascii_letters + string.digits
_TOKEN = re.compile(r"[a-z0-9]+")
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
# Words too common in tool names and descriptions to signal intent on their own.
_GENERIC = frozenset(
    {
        "get", "set", "list", "create", "update", "delete", "fetch", "find", "make", "tool", "tools",
        "function", "call", "run", "execute", "data", "info", "information", "result", "results",
        "based", "provide", "provides", "user", "input", "output", "request", "response", "retrieve",
        "retrieves", "returns", "specific", "specified", "optional", "required", "string", "number",
        "object", "the", "for", "and", "api", "new", "current", "given", "value", "values",
    }
)


def _words_of(text: str) -> set[str]:
    found = set(_TOKEN.findall(text.lower()))
    return found | {w[:-1] for w in found if len(w) > 3 and w.endswith("s")}


def _score(tool: Tool, text: str, text_words: set[str]) -> int:
    """How strongly `text` mentions `tool`: its name counts most, then its name's parts, then
    telling words of its description."""
    name = tool.name.lower()
    score = 0
    if name and (name in text.lower() or name.replace("_", " ") in text.lower()):
        score += 10
    parts = {p for p in _TOKEN.findall(_CAMEL.sub("_", tool.name).lower()) if len(p) >= 3}
    score += 2 * len((parts - _GENERIC) & text_words)
    if tool.description:
        described = {w for w in _TOKEN.findall(tool.description.lower()) if len(w) >= 4}
        score += len((described - _GENERIC - STOPWORDS - parts) & text_words)
    return score


def select_tools(request: ChatRequest) -> list[Tool]:
    """The tools the model calls for `request` (empty: it answers in text)."""
    tools = function_tools(request.tools)  # Anthropic server tools are not the simulator's
    choice = request.tool_choice
    mode = choice.mode if choice is not None else "auto"
    if not tools or mode == "none":
        return []
    if mode == "function":
        assert choice is not None
        named = [t for t in tools if t.name == choice.name]
        if not named:
            raise InvalidArgument(f"tool_choice names an unknown function: {choice.name!r}", param="tool_choice")
        return named[:1]
    text = last_user_text(request.messages)
    text_words = _words_of(text)
    scores = [_score(tool, text, text_words) for tool in tools]
    if mode == "required":
        best = max(range(len(tools)), key=lambda i: (scores[i], -i))
        return [tools[best]]
    messages = request.messages
    if not messages or messages[-1].role != "user" or echo_text(messages) is not None:
        return []
    return [tool for tool, score in zip(tools, scores, strict=True) if score > 0][:_MAX_PARALLEL]


def call_id(rng: random.Random) -> str:
    """An OpenAI-style tool call id: `call_` and 24 alphanumerics."""
    return "call_" + "".join(rng.choice(_ID_ALPHABET) for _ in range(24))


def plan_tool_calls(request: ChatRequest, tools: Sequence[Tool], rng: random.Random) -> list[ToolCall]:
    """One call per tool, with arguments generated from its parameters schema."""
    hints = analyze(last_user_text(request.messages))
    calls = []
    for tool in tools:
        schema = tool.parameters if tool.parameters else {"type": "object", "properties": {}}
        arguments = json.dumps(generate_instance(schema, rng, hints), ensure_ascii=False)
        calls.append(ToolCall(id=call_id(rng), name=tool.name, arguments=arguments))
    return calls
