"""Request validation: every bad request is rejected here, before any upstream is involved."""

from __future__ import annotations

import io
import json
import math
import re
import warnings
from typing import Any

from raven_service.core.errors import InvalidArgument
from raven_service.core.types import MAX_TOKENS_NAMES, ROLES, ChatRequest

#: `reasoning.effort` values (OpenAI's, which the other dialects map onto).
REASONING_EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh")
_TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MAX_STOP = 4

# Request size limits (SPEC §10).
MAX_MESSAGES = 10_000
MAX_TOOLS = 512
# JSON Schema limits (SPEC §10), for tools[].function.parameters and response_format's schema.
MAX_SCHEMA_DEPTH = 32
MAX_SCHEMA_NODES = 10_000
MAX_SCHEMA_COUNT = 10_000  # minItems / minLength / minProperties / minContains and regex {n} repeats
MAX_PATTERN_CHARS = 1_000
MAX_IMAGE_PIXELS = 40_000_000  # input images (SPEC §10)
_COUNT_KEYWORDS = ("minItems", "minLength", "minProperties", "minContains")
_PATTERN_KEYWORDS = ("pattern",)
#: A regex repetition {n}, {n,} or {n,m}, with its numbers.
_REPEAT = re.compile(r"\{(\d+)(?:,(\d*))?\}")


def _range(value: float | None, param: str, lo: float, hi: float, *, lo_open: bool = False) -> None:
    if value is None:
        return
    if not math.isfinite(value) or value > hi or value < lo or (lo_open and value == lo):
        left = "(" if lo_open else "["
        raise InvalidArgument(f"'{param}' must be in {left}{lo:g}, {hi:g}], got {value}.", param=param,
                              code="invalid_value")


def validate_chat(req: ChatRequest) -> None:
    if not req.model:
        raise InvalidArgument("'model' is required.", param="model", code="missing_required_parameter")
    if not req.messages:
        raise InvalidArgument("'messages' must contain at least one message.", param="messages",
                              code="invalid_value")
    if len(req.messages) > MAX_MESSAGES:
        raise InvalidArgument(f"'messages' holds {len(req.messages)} messages; at most {MAX_MESSAGES:,} are allowed.",
                              param="messages", code="invalid_value")
    if len(req.tools) > MAX_TOOLS:
        raise InvalidArgument(f"'tools' holds {len(req.tools)} tools; at most {MAX_TOOLS} are allowed.",
                              param="tools", code="invalid_value")
    _validate_messages(req)
    _validate_sampling(req)
    _validate_tools(req)
    _validate_anthropic(req)


def _validate_messages(req: ChatRequest) -> None:
    for i, msg in enumerate(req.messages):
        where = f"messages[{i}]"
        if msg.role not in ROLES:
            raise InvalidArgument(
                f"'{where}.role' must be one of {', '.join(sorted(ROLES))}, got '{msg.role}'.",
                param=f"{where}.role", code="invalid_value",
            )
        if msg.role == "tool" and not msg.tool_call_id:
            raise InvalidArgument(f"'{where}.tool_call_id' is required for tool messages.",
                                  param=f"{where}.tool_call_id", code="missing_required_parameter")
        if msg.tool_calls and msg.role != "assistant":
            raise InvalidArgument(f"'{where}.tool_calls' is only allowed on assistant messages.",
                                  param=f"{where}.tool_calls", code="invalid_value")
        for j, call in enumerate(msg.tool_calls):
            if not call.name:
                raise InvalidArgument(f"'{where}.tool_calls[{j}].function.name' is required.",
                                      param=f"{where}.tool_calls[{j}].function.name",
                                      code="missing_required_parameter")
        for j, part in enumerate(msg.parts):
            if part.type not in ("text", "image_url"):
                raise InvalidArgument(f"'{where}.content[{j}].type' must be 'text' or 'image_url'.",
                                      param=f"{where}.content[{j}].type", code="invalid_value")


def _validate_sampling(req: ChatRequest) -> None:
    _range(req.temperature, "temperature", 0.0, 2.0)
    _range(req.top_p, "top_p", 0.0, 1.0, lo_open=True)
    _range(req.frequency_penalty, "frequency_penalty", -2.0, 2.0)
    _range(req.presence_penalty, "presence_penalty", -2.0, 2.0)
    if req.max_tokens is not None and req.max_tokens < 1:
        name = req.max_tokens_name
        raise InvalidArgument(f"'{name}' must be at least 1, got {req.max_tokens}.", param=name,
                              code="invalid_value")
    if req.max_tokens_name not in MAX_TOKENS_NAMES:
        raise InvalidArgument("'max_tokens_name' must be max_tokens or max_completion_tokens.",
                              param="max_tokens_name", code="invalid_value")
    if (rc := req.reasoning) is not None:
        if rc.effort is not None and rc.effort not in REASONING_EFFORTS:
            raise InvalidArgument(f"'reasoning.effort' must be one of {', '.join(REASONING_EFFORTS)}, got "
                                  f"'{rc.effort[:40]}'.", param="reasoning.effort", code="invalid_value")
        if rc.budget_tokens is not None and rc.budget_tokens < 0:
            raise InvalidArgument("'reasoning.budget_tokens' must be >= 0.", param="reasoning.budget_tokens",
                                  code="invalid_value")
    if req.seed is not None and not (-(2**63) <= req.seed < 2**63):
        raise InvalidArgument("'seed' is out of range.", param="seed", code="invalid_value")
    if len(req.stop) > MAX_STOP:
        raise InvalidArgument(f"'stop' accepts at most {MAX_STOP} sequences.", param="stop", code="invalid_value")
    if any(not s for s in req.stop):
        raise InvalidArgument("'stop' sequences must not be empty.", param="stop", code="invalid_value")


def _validate_tools(req: ChatRequest) -> None:
    names = set()
    for i, tool in enumerate(req.tools):
        if not _TOOL_NAME.match(tool.name or ""):
            raise InvalidArgument(
                f"'tools[{i}].function.name' must be 1-64 characters of a-z, A-Z, 0-9, _ or -.",
                param=f"tools[{i}].function.name", code="invalid_value",
            )
        if tool.parameters is not None and not isinstance(tool.parameters, dict):
            raise InvalidArgument(f"'tools[{i}].function.parameters' must be an object.",
                                  param=f"tools[{i}].function.parameters", code="invalid_value")
        if tool.parameters is not None:
            validate_schema(tool.parameters, f"tools[{i}].function.parameters")
        names.add(tool.name)
    choice = req.tool_choice
    if choice is not None:
        if choice.mode == "function" and choice.name not in names:
            raise InvalidArgument(f"'tool_choice' names function '{choice.name}' which is not in 'tools'.",
                                  param="tool_choice", code="invalid_value")
        if choice.mode == "required" and not req.tools:
            raise InvalidArgument("'tool_choice' is 'required' but no 'tools' were given.",
                                  param="tool_choice", code="invalid_value")
    fmt = req.response_format
    if fmt is not None and fmt.type == "json_schema" and not isinstance(fmt.schema, dict):
        raise InvalidArgument("'response_format.json_schema.schema' is required for type 'json_schema'.",
                              param="response_format.json_schema.schema", code="missing_required_parameter")
    if fmt is not None and isinstance(fmt.schema, dict):
        validate_schema(fmt.schema, "response_format.json_schema.schema")


#: The deepest nesting of verbatim Anthropic JSON (blocks, tool definitions): the REST body limit.
MAX_JSON_DEPTH = 64
MAX_ANTHROPIC_BETA = 64
_JSON_STRING = re.compile(r'"(?:[^"\\]++|\\.)*+"', re.DOTALL)
_BRACKETS = re.compile(r"[\[{]|[\]}]")


def _json_depth(text: str) -> int:
    """The nesting depth of the arrays / objects of JSON `text` (strings skipped; no recursion)."""
    depth = deepest = 0
    for match in _BRACKETS.finditer(_JSON_STRING.sub("", text)):
        if match.group() in "[{":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def _anthropic_json(text: str, param: str, *, array: bool) -> Any:
    """The verbatim Anthropic JSON of a message (an array of blocks) or a tool (an object), checked."""
    if _json_depth(text) > MAX_JSON_DEPTH:
        raise InvalidArgument(f"'{param}' is nested too deeply (at most {MAX_JSON_DEPTH} levels).", param=param,
                              code="invalid_value")
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        raise InvalidArgument(f"'{param}' is not valid JSON.", param=param, code="invalid_value") from None
    items = value if array and isinstance(value, list) else [value]
    if (array and not isinstance(value, list)) or not all(
            isinstance(v, dict) and isinstance(v.get("type", ""), str) for v in items):
        what = "an array of content blocks (objects with a string 'type')" if array else "a JSON object"
        raise InvalidArgument(f"'{param}' must be {what}.", param=param, code="invalid_value")
    return value


def _validate_anthropic(req: ChatRequest) -> None:
    """Verbatim Anthropic content (POST /v1/messages, or a gRPC client setting it) is well-formed."""
    for i, msg in enumerate(req.messages):
        if msg.anthropic_content:
            _anthropic_json(msg.anthropic_content, f"messages[{i}].anthropic_content", array=True)
    for i, tool in enumerate(req.tools):
        if tool.anthropic:
            _anthropic_json(tool.anthropic, f"tools[{i}].anthropic_tool", array=False)
    if len(req.anthropic_beta) > MAX_ANTHROPIC_BETA or any(
            not _BETA.match(b) for b in req.anthropic_beta):
        raise InvalidArgument("'anthropic-beta' values must be feature names (letters, digits, '-', '_', '.').",
                              param="anthropic-beta", code="invalid_value")


_BETA = re.compile(r"^[A-Za-z0-9._-]{1,128}$")


def _schema_error(param: str, what: str) -> InvalidArgument:
    return InvalidArgument(f"'{param}' exceeds a JSON Schema limit: {what}.", param=param, code="invalid_value")


def _check_pattern(pattern: str, param: str) -> None:
    if len(pattern) > MAX_PATTERN_CHARS:
        raise _schema_error(param, f"a pattern has {len(pattern):,} characters (at most {MAX_PATTERN_CHARS:,})")
    for match in _REPEAT.finditer(pattern):
        for number in match.groups():
            if number and int(number) > MAX_SCHEMA_COUNT:
                raise _schema_error(param, f"the pattern repeat {match.group(0)} is above {MAX_SCHEMA_COUNT:,}")


def _check_keywords(node: dict[str, Any], param: str) -> None:
    for keyword in _COUNT_KEYWORDS:
        value = node.get(keyword)
        if isinstance(value, int | float) and not isinstance(value, bool) and value > MAX_SCHEMA_COUNT:
            raise _schema_error(param, f"{keyword} is {value:g} (at most {MAX_SCHEMA_COUNT:,})")
    for keyword in _PATTERN_KEYWORDS:
        pattern = node.get(keyword)
        if isinstance(pattern, str):
            _check_pattern(pattern, param)
    pattern_props = node.get("patternProperties")
    if isinstance(pattern_props, dict):
        for pattern in pattern_props:
            _check_pattern(pattern, param)


def validate_schema(schema: Any, param: str) -> None:
    """Bounds a client JSON Schema before anything interprets it: at most MAX_SCHEMA_DEPTH levels
    of objects/arrays, MAX_SCHEMA_NODES values in all, count keywords (minItems, minLength,
    minProperties, minContains) and regex repeats ({n}) at most MAX_SCHEMA_COUNT, patterns at most
    MAX_PATTERN_CHARS characters. Iterative: a hostile schema costs at most MAX_SCHEMA_NODES steps.

    Raises InvalidArgument naming the limit."""
    nodes = 0
    stack: list[tuple[Any, int]] = [(schema, 1)]
    while stack:
        node, depth = stack.pop()
        nodes += 1
        if nodes > MAX_SCHEMA_NODES:
            raise _schema_error(param, f"more than {MAX_SCHEMA_NODES:,} nodes")
        if isinstance(node, dict):
            children: Any = node.values()
            _check_keywords(node, param)
        elif isinstance(node, list):
            children = node
        else:
            continue
        if depth > MAX_SCHEMA_DEPTH:
            raise _schema_error(param, f"nested deeper than {MAX_SCHEMA_DEPTH} levels")
        stack.extend((child, depth + 1) for child in children)


def validate_input_image(data: bytes, param: str = "image") -> tuple[int, int]:
    """The (width, height) of a client image, read from its header only (nothing is decoded);
    InvalidArgument when it is not an image Pillow reads or has more than MAX_IMAGE_PIXELS pixels."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError):
        raise InvalidArgument(f"'{param}' is not a readable PNG, JPEG or WebP image.", param=param,
                              code="invalid_value") from None
    if width * height > MAX_IMAGE_PIXELS:
        raise InvalidArgument(f"'{param}' has {width}x{height} pixels; at most {MAX_IMAGE_PIXELS:,} are accepted.",
                              param=param, code="invalid_value")
    return width, height
