"""Strict JSON request bodies: msgspec Structs, no lenient coercion, OpenAI-shaped 400s.

Routes declare ``data: SomeStruct`` with ``dto=StrictJSON[SomeStruct]``: Litestar then hands the raw
body (already bounded by ``request_max_body_size``) to :meth:`StrictJSON.decode_bytes`, and builds
the OpenAPI request schema from the Struct. Decoding is msgspec's strict mode: ``"stream": "yes"``
or ``"max_tokens": 1.5`` are 400s naming the field in ``param``. Unknown keys are tolerated; a Struct
declared with ``dict=True`` additionally receives them (see :func:`extra_fields`).
"""

from __future__ import annotations

import re
from collections.abc import Generator
from functools import cache
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec
from litestar.dto import AbstractDTO, DTOFieldDefinition
from litestar.typing import FieldDefinition

from gateway.errors import ApiError

if TYPE_CHECKING:
    from litestar._openapi.schema_generation import SchemaCreator
    from litestar.openapi.spec import Reference, Schema

__all__ = [
    "MAX_JSON_CONTAINERS",
    "MAX_JSON_DEPTH",
    "PARSED_BODY_STATE_KEY",
    "StrictJSON",
    "check_depth",
    "extra_fields",
    "json_depth_exceeds",
    "json_shape_error",
    "parse_body",
]

#: The deepest nesting of arrays and objects a request body may have (SPEC §10).
MAX_JSON_DEPTH = 64

T = TypeVar("T")
S = TypeVar("S", bound=msgspec.Struct)

_EXTRA_ATTR = "_raven_extra_fields"
#: Where the auth-first hook leaves the decoded body for StrictJSON (``scope["state"]``).
PARSED_BODY_STATE_KEY = "raven_parsed_body"
_TOP_LEVEL = msgspec.json.Decoder(dict[str, msgspec.Raw])
_ANY = msgspec.json.Decoder()
_LOCATED = re.compile(r"^(?P<text>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.DOTALL)
_MISSING = re.compile(r"^Object missing required field `(?P<field>[^`]+)`$")
_UNKNOWN = re.compile(r"^Object contains unknown field `(?P<field>[^`]+)`$")
#: A JSON string literal (possessive: linear time, no backtracking on long strings).
_STRING = re.compile(rb'"(?:[^"\\]++|\\.)*+"', re.DOTALL)
#: The most arrays and objects one body may hold: decoding builds one Python object each, on the
#: event loop, so a 10 MiB body of ``[[],[],...]`` would otherwise stall every other request for
#: seconds. Generous for real requests (10,000 messages and 512 tool schemas fit).
MAX_JSON_CONTAINERS = 200_000
#: Every byte except the four brackets (deleted by bytes.translate); openers -> 0x01, closers -> 0xff.
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_BRACKETS = bytes.maketrans(b"[]{}", b"\x01\xff\x01\xff")
_RUNS = re.compile(rb"\x01+|\xff+")


def json_shape_error(raw: bytes, max_depth: int = MAX_JSON_DEPTH,
                     max_containers: int = MAX_JSON_CONTAINERS) -> str | None:
    """Why the JSON text ``raw`` is too deep or too big to decode, or None.

    A scan at C speed before any decoding (so no decoder recurses or allocates on hostile input):
    string literals are removed, every byte but the brackets is deleted, and the depth is the
    largest running sum over the runs of openers and closers. Malformed text is judged by the same
    rule (the decoder rejects it afterwards anyway).
    """
    if raw.count(b"[") + raw.count(b"{") <= max_depth:
        return None
    brackets = _STRING.sub(b"", raw).translate(_BRACKETS, _NOT_BRACKETS)
    depth = deepest = 0
    for run in _RUNS.findall(brackets):
        if run[0] == 1:
            depth += len(run)
            if depth > deepest:
                deepest = depth
        else:
            depth -= len(run)
    if deepest > max_depth:
        return f"The JSON body is nested too deeply (at most {max_depth} levels of arrays and objects)."
    if brackets.count(1) > max_containers:
        return f"The JSON body has too many arrays and objects (at most {max_containers:,})."
    return None


def json_depth_exceeds(raw: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether the arrays/objects of ``raw`` nest deeper than ``limit``."""
    return json_shape_error(raw, limit, max_containers=len(raw)) is not None


def check_depth(raw: bytes) -> None:
    """Raises the 400 for a body nested deeper than MAX_JSON_DEPTH or holding too many containers."""
    if (why := json_shape_error(raw)) is not None:
        raise ApiError(400, why, code="invalid_value")


def _too_deep() -> ApiError:
    return ApiError(400, f"The JSON body is nested too deeply (at most {MAX_JSON_DEPTH} levels of arrays and objects).",
                    code="invalid_value")


@cache
def _decoder(model_type: type[Any]) -> msgspec.json.Decoder[Any]:
    return msgspec.json.Decoder(model_type, strict=True)


def parse_body(raw: bytes, model_type: type[S]) -> S:
    """Decode a JSON object body into ``model_type`` strictly.

    Raises:
        ApiError: 400 for malformed JSON, a non-object body, a missing field or a wrong type.
    """
    keeps_extra = model_type.__struct_config__.dict
    check_depth(raw)
    try:
        top = _TOP_LEVEL.decode(raw) if keeps_extra else None
        value = _decoder(model_type).decode(raw)
        if top is not None:
            known = model_type.__struct_encode_fields__
            extra = {key: _ANY.decode(item) for key, item in top.items() if key not in known}
            setattr(value, _EXTRA_ATTR, extra)
    except msgspec.ValidationError as exc:
        raise _schema_error(str(exc)) from None
    except RecursionError:  # unreachable after check_depth; never a 500 all the same
        raise _too_deep() from None
    except msgspec.DecodeError as exc:
        raise ApiError(
            400,
            f"We could not parse the JSON body of your request ({exc}).",
            code="invalid_json",
        ) from None
    return value


def extra_fields(value: msgspec.Struct) -> dict[str, Any]:
    """The top-level keys of the body that ``value``'s Struct does not declare (``dict=True`` only)."""
    extra: dict[str, Any] = getattr(value, _EXTRA_ATTR, {})
    return extra


def _schema_error(message: str) -> ApiError:
    """A msgspec validation message as a 400 naming the field (``messages[0].role``)."""
    located = _LOCATED.match(message)
    text = located.group("text") if located else message
    path = (located.group("path") or "").lstrip(".") if located else ""
    if missing := _MISSING.match(text):
        param = f"{path}.{missing.group('field')}" if path else missing.group("field")
        return ApiError(400, f"Missing required parameter: '{param}'.", code="missing_required_parameter", param=param)
    if unknown := _UNKNOWN.match(text):  # Structs declared with forbid_unknown_fields (admin bodies)
        param = f"{path}.{unknown.group('field')}" if path else unknown.group("field")
        return ApiError(400, f"Unknown parameter: '{param}'.", code="unknown_parameter", param=param)
    if not path:
        if text.startswith("Expected `object`"):
            return ApiError(400, "The request body must be a JSON object.", code="invalid_type")
        return ApiError(400, f"Invalid request body: {text}.", code="invalid_value")
    code = "invalid_type" if ", got `" in text else "invalid_value"
    detail = text[0].lower() + text[1:]
    return ApiError(400, f"Invalid value for '{path}': {detail}.", code=code, param=path)


class StrictJSON(AbstractDTO[T]):
    """A body "DTO" that decodes with :func:`parse_body` instead of Litestar's lenient conversion.

    It only borrows the DTO hooks: ``decode_bytes`` for decoding and ``create_openapi_schema`` for the
    documentation, which is generated from the Struct as for any other Litestar body.
    """

    def decode_bytes(self, value: bytes) -> Any:
        """Decode the raw body (already decoded by the auth-first hook, see gateway/auth.py)."""
        state = self.asgi_connection.scope["state"]
        if (parsed := state.pop(PARSED_BODY_STATE_KEY, None)) is not None:
            return parsed
        return parse_body(value, self.model_type)  # type: ignore[type-var]

    def decode_builtins(self, value: dict[str, Any]) -> Any:
        """Form bodies are not accepted: the declared media type is JSON."""
        raise ApiError(400, "The request body must be JSON.", code="invalid_json")

    @classmethod
    def create_for_field_definition(
        cls, field_definition: FieldDefinition, handler_id: str, backend_cls: Any = None
    ) -> None:
        """Nothing to prepare: decoding needs no per-handler backend."""

    @classmethod
    def create_openapi_schema(
        cls, field_definition: FieldDefinition, handler_id: str, schema_creator: SchemaCreator
    ) -> Reference | Schema:
        """The request body schema, generated from the Struct."""
        return schema_creator.for_field_definition(
            FieldDefinition.from_annotation(cls.model_type, kwarg_definition=field_definition.kwarg_definition)
        )

    @classmethod
    def generate_field_definitions(cls, model_type: type[Any]) -> Generator[DTOFieldDefinition, None, None]:
        """Unused (no DTO backend)."""
        yield from ()

    @classmethod
    def detect_nested_field(cls, field_definition: FieldDefinition) -> bool:
        """Unused (no DTO backend)."""
        return False
