"""Domain types: frozen msgspec Structs, free of any transport."""

from __future__ import annotations

import enum
from decimal import Decimal
from typing import Any, Literal

import msgspec

ROLES = frozenset({"system", "developer", "user", "assistant", "tool"})
FinishReason = Literal["stop", "length", "tool_calls", "content_filter", "error"]


class Frozen(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Base for immutable domain values."""


# ----------------------------------------------------------------------------------------- chat
class ContentPart(Frozen, frozen=True):
    type: str  # "text" | "image_url"
    text: str = ""
    image_url: str = ""
    detail: str = ""


class ToolCall(Frozen, frozen=True):
    id: str
    name: str
    arguments: str  # JSON text, passed through unchanged


class ReasoningPart(Frozen, frozen=True):
    """One block of a model's reasoning, as every dialect can carry it.

    - ``text``: the readable reasoning (Anthropic ``thinking``, Gemini ``thought`` parts, the
      ``reasoning_content`` of OpenAI-compatible servers, a Responses reasoning summary);
    - ``signature``: the opaque token proving the text is the model's own (Anthropic thinking
      ``signature``, Gemini ``thoughtSignature``); passed back upstream unchanged, never shown;
    - ``encrypted``: reasoning nobody but the model can read (Anthropic ``redacted_thinking.data``,
      Responses ``encrypted_content``); ``text`` is then usually empty.
    """

    text: str = ""
    signature: str = ""
    encrypted: str = ""


class Message(Frozen, frozen=True):
    role: str
    content: str | None = None
    parts: tuple[ContentPart, ...] = ()
    name: str | None = None
    tool_call_id: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    #: For role "assistant": the reasoning that preceded the answer (sent back in multi-turn
    #: conversations; Anthropic requires the signed thinking blocks before tool results).
    reasoning: tuple[ReasoningPart, ...] = ()
    #: The Anthropic content blocks (a JSON array text) this message was translated from, verbatim:
    #: Anthropic upstreams send them instead of the fields above (full fidelity: signatures,
    #: cache_control, unknown block types); other providers ignore it. "" = none.
    anthropic_content: str = ""

    def text(self) -> str:
        """All the text of the message (content or text parts)."""
        if self.parts:
            return "".join(p.text for p in self.parts if p.type == "text")
        return self.content or ""


class Tool(Frozen, frozen=True):
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None
    #: "function", or an Anthropic server tool's type (web_search_20250305 ...): such a tool is
    #: sent to Anthropic upstreams only (see `function_tools`).
    type: str = "function"
    #: The tool as an Anthropic client defined it (a JSON object text), sent verbatim to Anthropic
    #: upstreams (cache_control, defer_loading, server tools). "" = none.
    anthropic: str = ""


def function_tools(tools: tuple[Tool, ...]) -> tuple[Tool, ...]:
    """The tools a provider other than Anthropic can offer: the functions (server tools dropped)."""
    if all(t.type == "function" for t in tools):
        return tools
    return tuple(t for t in tools if t.type == "function")


class ToolChoice(Frozen, frozen=True):
    mode: Literal["none", "auto", "required", "function"]
    name: str | None = None  # for mode "function"


class ResponseFormat(Frozen, frozen=True):
    type: Literal["text", "json_object", "json_schema"]
    schema: dict[str, Any] | None = None
    name: str | None = None
    strict: bool | None = None


class ReasoningConfig(Frozen, frozen=True):
    """How much the model should think. Each provider maps what it has: OpenAI-compatible
    ``reasoning_effort``, Anthropic ``thinking`` (``budget_tokens``), Gemini ``thinkingConfig``."""

    effort: str | None = None  # "none" | "minimal" | "low" | "medium" | "high" (| "xhigh")
    budget_tokens: int | None = None  # an explicit thinking budget (Anthropic / Gemini)
    summary: str | None = None  # Responses API: "auto" | "concise" | "detailed"


#: The two OpenAI names of the output bound; `ChatRequest.max_tokens_name` says which one to send.
MAX_TOKENS_NAMES = ("max_tokens", "max_completion_tokens")


class ChatRequest(Frozen, frozen=True):
    """A validated chat request as the domain sees it (OpenAI semantics)."""

    model: str
    messages: tuple[Message, ...]
    #: The output bound, whichever name the client used (see `max_tokens_name`).
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: tuple[str, ...] = ()
    seed: int | None = None
    tools: tuple[Tool, ...] = ()
    tool_choice: ToolChoice | None = None
    response_format: ResponseFormat | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    user: str | None = None
    models: tuple[str, ...] = ()  # fallback list
    extra: dict[str, Any] = msgspec.field(default_factory=dict)  # unknown top-level keys
    stream: bool = False
    #: The wire name of the bound: "max_tokens" or "max_completion_tokens" (what the client sent,
    #: which OpenAI-compatible upstreams receive unchanged; gpt-5 / o-series reject max_tokens).
    max_tokens_name: str = "max_tokens"
    reasoning: ReasoningConfig | None = None
    #: The client's `anthropic-beta` values, for Anthropic upstreams.
    anthropic_beta: tuple[str, ...] = ()
    #: The REST dialect the request came in ("" = chat completions; "messages" = Anthropic's).
    dialect: str = ""

    def set_params(self) -> set[str]:
        """Names of the optional parameters this request sets (the bound under its wire name)."""
        names = set()
        for name in _FIELD_PARAMS:
            value = getattr(self, name)
            if value is not None and value != () and value != {}:
                names.add(name)
        if self.max_tokens is not None:
            names.add(self.max_tokens_name)
        return names | set(self.extra)


OPTIONAL_PARAMS = (
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "stop",
    "seed",
    "tools",
    "tool_choice",
    "response_format",
    "frequency_penalty",
    "presence_penalty",
    "user",
    "reasoning",
)
#: The optional parameters that are ChatRequest fields under their own name.
_FIELD_PARAMS = tuple(p for p in OPTIONAL_PARAMS if p not in MAX_TOKENS_NAMES)


# ------------------------------------------------------------------------------- stream events
class TextDelta(Frozen, frozen=True, tag="text"):
    text: str


class ToolCallDelta(Frozen, frozen=True, tag="tool_call"):
    """A fragment of a tool call: id and name on the first fragment, arguments in pieces."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


class ReasoningDelta(Frozen, frozen=True, tag="reasoning"):
    """A fragment of reasoning block `index` (the ordinal of the block among the reply's reasoning
    blocks): text in pieces; the signature and encrypted data usually arrive whole, last."""

    index: int = 0
    text: str = ""
    signature: str = ""
    encrypted: str = ""


class Finish(Frozen, frozen=True, tag="finish"):
    reason: str  # one of FinishReason
    native: str = ""
    #: The stop sequence that ended the text, when the provider says which ("" otherwise).
    stop_sequence: str = ""


class UsageReport(Frozen, frozen=True, tag="usage"):
    """Token counts in OpenAI's semantics, whatever the provider: `prompt_tokens` counts every
    prompt token, including those read from a prompt cache (`cached_tokens`) and those written to
    one (`cache_creation_tokens`); `completion_tokens` includes `reasoning_tokens`."""

    prompt_tokens: int
    completion_tokens: int
    estimated: bool = False
    cached_tokens: int = 0
    cache_creation_tokens: int = 0
    reasoning_tokens: int = 0


ChatEvent = TextDelta | ToolCallDelta | ReasoningDelta | Finish | UsageReport


class ChatResult(Frozen, frozen=True):
    """A whole completion from a provider (unary calls)."""

    content: str | None
    tool_calls: tuple[ToolCall, ...] = ()
    finish_reason: str = "stop"
    native_finish_reason: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    usage_estimated: bool = False
    reasoning: tuple[ReasoningPart, ...] = ()
    #: Subsets of prompt_tokens / completion_tokens, as in `UsageReport`.
    cached_tokens: int = 0
    cache_creation_tokens: int = 0
    reasoning_tokens: int = 0
    #: The stop sequence that ended the text, when the provider says which ("" otherwise).
    stop_sequence: str = ""


class ProviderChatRequest(Frozen, frozen=True):
    """What a provider adapter receives: the request with the upstream model name and only the
    parameters that model supports."""

    upstream_model: str
    request: ChatRequest


# ------------------------------------------------------------------------------------- catalogue
class Route(Frozen, frozen=True):
    provider: str
    model: str


class ModelInfo(Frozen, frozen=True):
    id: str
    routes: tuple[Route, ...]
    capabilities: tuple[str, ...] = ("chat",)
    context_length: int = 8192
    price_input_per_mtok: Decimal = Decimal(0)
    price_output_per_mtok: Decimal = Decimal(0)
    price_per_image: Decimal = Decimal(0)
    price_per_video_second: Decimal = Decimal(0)
    #: Prompt tokens read from a prompt cache; None = priced as plain input.
    price_cached_input_per_mtok: Decimal | None = None
    #: Prompt tokens written to a prompt cache (Anthropic cache creation); None = plain input.
    price_cache_write_per_mtok: Decimal | None = None
    #: Embedding models: the vector length when the request names no `dimensions` (0 = n/a).
    embedding_dimensions: int = 0
    supported_parameters: tuple[str, ...] = OPTIONAL_PARAMS
    description: str = ""
    created: int = 0
    max_output_tokens: int = 4096


# ------------------------------------------------------------------------------------- embeddings
class EmbeddingRequest(Frozen, frozen=True):
    """A validated embeddings request: either texts or token arrays (OpenAI's ``input``)."""

    model: str
    texts: tuple[str, ...] = ()
    token_arrays: tuple[tuple[int, ...], ...] = ()
    dimensions: int | None = None  # the vector length asked for (models that can shorten)
    user: str | None = None

    @property
    def count(self) -> int:
        return len(self.texts) or len(self.token_arrays)


class EmbeddingResult(Frozen, frozen=True):
    """One vector per input, in input order, and the upstream's token count."""

    vectors: tuple[tuple[float, ...], ...]
    prompt_tokens: int = 0
    usage_estimated: bool = False


# ------------------------------------------------------------------------------------- images/video
class ImageRequest(Frozen, frozen=True):
    model: str
    prompt: str
    n: int = 1
    width: int = 1024
    height: int = 1024
    response_format: Literal["b64_json", "url"] = "b64_json"
    seed: int | None = None
    quality: str | None = None
    style: str | None = None


class GeneratedImage(Frozen, frozen=True):
    png: bytes
    revised_prompt: str = ""


class VideoRequest(Frozen, frozen=True):
    model: str
    prompt: str
    seconds: int = 4
    width: int = 640
    height: int = 360
    image: bytes | None = None  # first frame (PNG/JPEG bytes) for image-to-video
    seed: int | None = None


class VideoState(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class VideoResult(Frozen, frozen=True):
    data: bytes
    mime_type: str = "video/mp4"


# ------------------------------------------------------------------------------------- keys/usage
class ApiKey(msgspec.Struct, kw_only=True):
    """A stored key. `secret_hash` is SHA-256 of the secret; the secret itself is never stored."""

    id: str
    name: str
    secret_hash: str
    prefix: str
    rpm: int = 0  # 0 = unlimited
    concurrency: int = 0  # 0 = unlimited
    credits: Decimal | None = None  # None = unlimited
    credits_used: Decimal = Decimal(0)
    credits_reserved: Decimal = Decimal(0)
    admin: bool = False  # kept equal to "admin" in scopes
    revoked: bool = False
    created_at: float = 0.0
    # ---- governance (SPEC §11)
    models: tuple[str, ...] = ()  # allow-list of slug patterns ("*" wildcard); empty = all
    expires_at: float | None = None  # unix s; None = never
    tpm: int = 0  # tokens per minute; 0 = unlimited
    budget: Decimal | None = None  # per budget_period window, on top of credits; None = none
    budget_period: str = ""  # "day" | "week" | "month" (calendar windows in UTC) when budget is set
    scopes: tuple[str, ...] = ("inference",)  # "inference" and/or "admin"
    metadata: dict[str, str] = msgspec.field(default_factory=dict)  # string tags
    alert_webhook: str = ""
    alert_thresholds: tuple[int, ...] = (80, 95, 100)  # percent of credits or budget
    webhook_secret: str = ""  # signs alert webhooks (HMAC-SHA256); shown once at creation
    # rotation: the secret before the last rotation keeps working until previous_expires_at
    previous_secret_hash: str = ""
    previous_expires_at: float = 0.0


SCOPES = ("inference", "admin")
BUDGET_PERIODS = ("day", "week", "month")


class KeyPatch(Frozen, frozen=True):
    """Changes to a stored key's governance fields; UNSET fields are left as they are (None clears
    the nullable ones: no expiry, no budget)."""

    models: tuple[str, ...] | msgspec.UnsetType = msgspec.UNSET
    expires_at: float | msgspec.UnsetType | None = msgspec.UNSET
    tpm: int | msgspec.UnsetType = msgspec.UNSET
    budget: Decimal | msgspec.UnsetType | None = msgspec.UNSET
    budget_period: str | msgspec.UnsetType = msgspec.UNSET
    scopes: tuple[str, ...] | msgspec.UnsetType = msgspec.UNSET
    metadata: dict[str, str] | msgspec.UnsetType = msgspec.UNSET
    alert_webhook: str | msgspec.UnsetType = msgspec.UNSET
    alert_thresholds: tuple[int, ...] | msgspec.UnsetType = msgspec.UNSET

    def changes(self) -> dict[str, object]:
        """The fields that are set, by name."""
        return {f: v for f in self.__struct_fields__ if (v := getattr(self, f)) is not msgspec.UNSET}


class Principal(Frozen, frozen=True):
    """The authenticated caller."""

    key_id: str
    name: str
    admin: bool = False
    rpm: int = 0
    concurrency: int = 0
    has_credit_limit: bool = False
    # string tags of the key (SPEC §11 `metadata`), sorted by name; snapshotted into usage records
    metadata: tuple[tuple[str, str], ...] = ()
    inference: bool = True  # scope "inference": may call models
    models: tuple[str, ...] = ()  # allow-list of slug patterns; empty = all
    tpm: int = 0
    budget: Decimal | None = None
    budget_period: str = ""
    expires_at: float | None = None  # the earliest of the key's expiry and (old secret) its grace end
    alerting: bool = False  # the key has an alert webhook: settlements are checked for crossings


class UsageRecord(msgspec.Struct, kw_only=True):
    """One generation's usage: written for every completion, whatever its outcome."""

    id: str
    key_id: str
    kind: str = "chat"  # chat | image | video | embedding
    model: str
    provider: str = ""
    upstream_model: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    #: Subsets of prompt_tokens (cache read / cache write) and of completion_tokens (reasoning).
    cached_tokens: int = 0
    cache_creation_tokens: int = 0
    reasoning_tokens: int = 0
    cost: Decimal = Decimal(0)
    latency_ms: int = 0
    ttft_ms: int = 0
    status: str = "completed"  # completed | failed | cancelled
    finish_reason: str = ""
    native_finish_reason: str = ""
    streamed: bool = False
    usage_estimated: bool = False
    attempts: tuple[str, ...] = ()
    error: str = ""
    created_at: float = 0.0
    #: The calling key's metadata (`Principal.metadata`) when the request was made, sorted by name.
    tags: tuple[tuple[str, str], ...] = ()


class CreditHold(Frozen, frozen=True):
    """A credit reservation: `amount` held on `key_id` until settled or `expires_at` (unix s).

    `owner` is the instance that renews it while its request runs ('' = a fixed expiry, e.g. a
    video task's hold). A key's `credits_reserved` always equals the sum of its live holds."""

    id: str
    key_id: str
    amount: Decimal
    owner: str = ""
    expires_at: float = 0.0
    #: Start (unix s) of the key's budget window this hold also reserved in; None = no budget.
    budget_window: float | None = None


class Settlement(Frozen, frozen=True):
    """The end of one admitted request: its usage record and the hold it settles ('' = none).

    Written in one transaction, keyed by `record.id`: the record is inserted, the hold released and
    `record.cost` charged; writing the same settlement again changes nothing (idempotent)."""

    record: UsageRecord
    hold_id: str = ""
    #: The budget window (start, unix s) the request was admitted in: its cost counts there even if
    #: the hold lapsed before the settlement was written. None = the key has no budget.
    budget_window: float | None = None
    #: `hold_id` is a credit slice shared by several requests (app/slices.py): take the record's
    #: cost out of it (moved from reserved to used) instead of dropping the whole hold.
    partial: bool = False


#: The dimensions a store can group usage by ("key" is the key id, "tags" the whole tag set).
USAGE_DIMENSIONS = frozenset({"day", "model", "key", "provider", "tags"})


class UsageAggregate(msgspec.Struct, kw_only=True):
    """Totals of the usage records sharing one value of each grouped dimension; a dimension that
    is not grouped is None. `latency_hist` / `ttft_hist` count requests per bucket of
    `core.latency.BOUNDS_MS` (ttft only of requests that had a first token)."""

    day: int | None = None  # unix seconds of the UTC day's start
    model: str | None = None
    key_id: str | None = None
    provider: str | None = None
    tags: tuple[tuple[str, str], ...] | None = None
    requests: int = 0
    errors: int = 0  # status "failed" (cancelled requests are not errors)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: Decimal = Decimal(0)
    latency_hist: list[int] = msgspec.field(default_factory=list)
    ttft_hist: list[int] = msgspec.field(default_factory=list)


class UsageSample(Frozen, frozen=True):
    """The grouping dimensions and timings of one usage record (for exact percentiles)."""

    key_id: str
    model: str
    provider: str
    tags: tuple[tuple[str, str], ...]
    created_at: float
    latency_ms: int
    ttft_ms: int


class StoredFile(Frozen, frozen=True):
    id: str
    key_id: str
    mime_type: str
    data: bytes
    created_at: float = 0.0


class AlertClaim(Frozen, frozen=True):
    """An alert threshold crossed (key, kind, window, threshold) whose delivery is owed: its JSON
    body as the claimer built it."""

    key_id: str
    kind: str
    period_start: float
    threshold: int
    body: bytes


class StoredResponse(Frozen, frozen=True):
    """A stored Responses API response (`store` + `previous_response_id`), owned by one key.

    `body` (the response object) and `input_items` (the whole input that led to it, as a JSON
    array) are the dialect's JSON texts, kept verbatim and never interpreted by the domain."""

    id: str
    key_id: str
    model: str
    body: str
    input_items: str = "[]"
    created_at: float = 0.0
    expires_at: float = 0.0


class VideoTask(msgspec.Struct, kw_only=True):
    """A video generation task as stored."""

    id: str
    key_id: str
    model: str
    prompt: str
    seconds: int
    width: int
    height: int
    request_id: str = ""
    seed: int | None = None
    image: bytes | None = None
    state: VideoState = VideoState.QUEUED
    progress: int = 0
    provider: str = ""
    upstream_task_id: str = ""  # for asynchronous upstream job APIs
    file_ids: tuple[str, ...] = ()
    file_sizes: tuple[int, ...] = ()
    error: str = ""
    reserved: Decimal = Decimal(0)
    cost: Decimal = Decimal(0)
    created_at: float = 0.0
    completed_at: float | None = None
    lease_owner: str = ""
    lease_until: float = 0.0
    hold_id: str = ""  # the credit hold this task settles when it ends ('' = none)
    #: The submitting key's metadata, carried into the task's final usage record.
    tags: tuple[tuple[str, str], ...] = ()
