"""Pure mapping functions between raven.v1 protobuf messages and domain types."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from google.protobuf import json_format, struct_pb2, timestamp_pb2

from raven.v1 import (
    chat_pb2,
    chat_service_pb2,
    key_service_pb2,
    model_pb2,
    usage_pb2,
    usage_service_pb2,
    video_pb2,
)
from raven_service.accounting.pricing import fmt
from raven_service.core.errors import InvalidArgument
from raven_service.core.types import (
    ApiKey,
    ChatRequest,
    ContentPart,
    Message,
    ModelInfo,
    ReasoningConfig,
    ReasoningPart,
    ResponseFormat,
    Tool,
    ToolCall,
    ToolChoice,
    UsageRecord,
    VideoState,
    VideoTask,
)


def _ints(value: Any) -> Any:
    """google.protobuf.Struct stores every number as a double; JSON Schema and upstream APIs
    expect integers where the client wrote them (minItems: 1, not 1.0)."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, dict):
        return {k: _ints(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_ints(v) for v in value]
    return value


def struct_to_dict(s: struct_pb2.Struct) -> dict[str, Any]:
    return _ints(json_format.MessageToDict(s))


def _message(m: chat_pb2.ChatMessage) -> Message:
    return Message(
        role=m.role,
        content=m.content if m.HasField("content") else None,
        parts=tuple(ContentPart(type=p.type, text=p.text, image_url=p.image_url, detail=p.detail)
                    for p in m.content_parts),
        name=m.name if m.HasField("name") else None,
        tool_call_id=m.tool_call_id if m.HasField("tool_call_id") else None,
        tool_calls=tuple(ToolCall(id=c.id, name=c.name, arguments=c.arguments) for c in m.tool_calls),
        reasoning=_reasoning_parts(m),
        anthropic_content=m.anthropic_content,
    )


def _reasoning_parts(m: chat_pb2.ChatMessage) -> tuple[ReasoningPart, ...]:
    if m.reasoning:
        return tuple(ReasoningPart(text=r.text, signature=r.signature, encrypted=r.encrypted) for r in m.reasoning)
    if m.HasField("reasoning_content") and m.reasoning_content:
        return (ReasoningPart(text=m.reasoning_content),)
    return ()


def reasoning_parts(parts: tuple[ReasoningPart, ...]) -> list[chat_pb2.ReasoningPart]:
    return [chat_pb2.ReasoningPart(text=r.text, signature=r.signature, encrypted=r.encrypted) for r in parts]


def _reasoning_config(rc: chat_pb2.ReasoningConfig) -> ReasoningConfig | None:
    if not (rc.HasField("effort") or rc.HasField("budget_tokens") or rc.HasField("summary")):
        return None
    return ReasoningConfig(
        effort=rc.effort if rc.HasField("effort") else None,
        budget_tokens=rc.budget_tokens if rc.HasField("budget_tokens") else None,
        summary=rc.summary if rc.HasField("summary") else None,
    )


def _bound(pb: chat_service_pb2.CreateChatCompletionRequest | chat_service_pb2.StreamChatCompletionRequest
           ) -> tuple[int | None, str]:
    """The output bound and the name the client gave it (max_tokens wins when both are set)."""
    if pb.HasField("max_tokens"):
        return pb.max_tokens, "max_tokens"
    if pb.HasField("max_completion_tokens"):
        return pb.max_completion_tokens, "max_completion_tokens"
    return None, "max_tokens"


def _tool_choice(tc: chat_pb2.ToolChoice) -> ToolChoice | None:
    which = tc.WhichOneof("choice")
    if which is None:
        return None
    if which == "function_name":
        return ToolChoice(mode="function", name=tc.function_name)
    if tc.mode not in ("none", "auto", "required"):
        raise InvalidArgument(f"'tool_choice' must be none, auto, required or a function, got '{tc.mode}'.",
                              param="tool_choice", code="invalid_value")
    return ToolChoice(mode=tc.mode)  # type: ignore[arg-type]


def _response_format(rf: chat_pb2.ResponseFormat) -> ResponseFormat | None:
    if not rf.type:
        return None
    if rf.type not in ("text", "json_object", "json_schema"):
        raise InvalidArgument(f"'response_format.type' must be text, json_object or json_schema, got '{rf.type}'.",
                              param="response_format.type", code="invalid_value")
    if rf.type != "json_schema":
        return ResponseFormat(type=rf.type)  # type: ignore[arg-type]
    js = rf.json_schema
    return ResponseFormat(
        type="json_schema",
        schema=struct_to_dict(js.schema) if js.HasField("schema") else None,
        name=js.name or None,
        strict=js.strict if js.HasField("strict") else None,
    )


def chat_request(
    pb: chat_service_pb2.CreateChatCompletionRequest | chat_service_pb2.StreamChatCompletionRequest,
    *,
    stream: bool,
) -> ChatRequest:
    """Both request messages carry the same fields."""
    max_tokens, max_tokens_name = _bound(pb)
    return ChatRequest(
        model=pb.model,
        messages=tuple(_message(m) for m in pb.messages),
        max_tokens=max_tokens,
        max_tokens_name=max_tokens_name,
        reasoning=_reasoning_config(pb.reasoning) if pb.HasField("reasoning") else None,
        temperature=pb.temperature if pb.HasField("temperature") else None,
        top_p=pb.top_p if pb.HasField("top_p") else None,
        stop=tuple(pb.stop),
        seed=pb.seed if pb.HasField("seed") else None,
        tools=tools(pb.tools),
        tool_choice=_tool_choice(pb.tool_choice) if pb.HasField("tool_choice") else None,
        response_format=_response_format(pb.response_format) if pb.HasField("response_format") else None,
        frequency_penalty=pb.frequency_penalty if pb.HasField("frequency_penalty") else None,
        presence_penalty=pb.presence_penalty if pb.HasField("presence_penalty") else None,
        user=pb.user if pb.HasField("user") else None,
        models=tuple(pb.models),
        extra=struct_to_dict(pb.extra_body) if pb.HasField("extra_body") else {},
        stream=stream,
        anthropic_beta=tuple(pb.anthropic_beta),
        dialect=pb.dialect,
    )


def tools(pbs: Any) -> tuple[Tool, ...]:
    """The domain tools of repeated raven.v1.Tool."""
    return tuple(
        Tool(
            name=t.name,
            description=t.description if t.HasField("description") else None,
            parameters=struct_to_dict(t.parameters) if t.HasField("parameters") else None,
            strict=t.strict if t.HasField("strict") else None,
            # a server tool exists only in Anthropic's dialect: other types count as "function"
            type=(t.type or "function") if t.anthropic_tool else "function",
            anthropic=t.anthropic_tool,
        )
        for t in pbs
    )


def messages(pbs: Any) -> tuple[Message, ...]:
    """The domain messages of repeated raven.v1.ChatMessage."""
    return tuple(_message(m) for m in pbs)


def usage(prompt: int, completion: int, cost: Decimal, estimated: bool, *, cached: int = 0, cache_creation: int = 0,
          reasoning: int = 0) -> usage_pb2.Usage:
    return usage_pb2.Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion,
                           cost=fmt(cost), estimated=estimated, cached_tokens=cached,
                           cache_creation_tokens=cache_creation, reasoning_tokens=reasoning)


def model(m: ModelInfo) -> model_pb2.Model:
    return model_pb2.Model(
        id=m.id,
        object="model",
        created=m.created,
        owned_by=m.routes[0].provider if m.routes else "",
        capabilities=list(m.capabilities),
        context_length=m.context_length,
        pricing=model_pb2.Pricing(
            prompt=fmt(m.price_input_per_mtok),
            completion=fmt(m.price_output_per_mtok),
            image=fmt(m.price_per_image) if m.price_per_image else "",
            video_second=fmt(m.price_per_video_second) if m.price_per_video_second else "",
            input_cache_read=fmt(m.price_cached_input_per_mtok) if m.price_cached_input_per_mtok is not None else "",
            input_cache_write=fmt(m.price_cache_write_per_mtok) if m.price_cache_write_per_mtok is not None else "",
        ),
        supported_parameters=list(m.supported_parameters),
        description=m.description,
        embedding_dimensions=m.embedding_dimensions,
    )


def timestamp(seconds: float | None) -> timestamp_pb2.Timestamp | None:
    """A Timestamp, or None (field left unset) for a missing or zero time."""
    if not seconds:
        return None
    return _timestamp(seconds)


def _timestamp(seconds: float) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromNanoseconds(int(seconds * 1e9))
    return ts


def api_key(k: ApiKey) -> key_service_pb2.ApiKey:
    return key_service_pb2.ApiKey(
        id=k.id, name=k.name, prefix=k.prefix, rpm=k.rpm, concurrency=k.concurrency,
        credits="" if k.credits is None else fmt(k.credits), credits_used=fmt(k.credits_used),
        admin=k.admin, revoked=k.revoked, create_time=timestamp(k.created_at),
    )


def generation(r: UsageRecord) -> usage_service_pb2.Generation:
    return usage_service_pb2.Generation(
        id=r.id, model=r.model, provider=r.provider, upstream_model=r.upstream_model,
        prompt_tokens=r.prompt_tokens, completion_tokens=r.completion_tokens, total_cost=fmt(r.cost),
        latency_ms=r.latency_ms, ttft_ms=r.ttft_ms, status=r.status, finish_reason=r.finish_reason,
        native_finish_reason=r.native_finish_reason, streamed=r.streamed, usage_estimated=r.usage_estimated,
        attempts=list(r.attempts), key_id=r.key_id, create_time=timestamp(r.created_at), kind=r.kind,
        error=r.error, cached_tokens=r.cached_tokens, cache_creation_tokens=r.cache_creation_tokens,
        reasoning_tokens=r.reasoning_tokens,
    )


_STATES = {
    VideoState.QUEUED: video_pb2.VideoGeneration.STATE_QUEUED,
    VideoState.RUNNING: video_pb2.VideoGeneration.STATE_RUNNING,
    VideoState.SUCCEEDED: video_pb2.VideoGeneration.STATE_SUCCEEDED,
    VideoState.FAILED: video_pb2.VideoGeneration.STATE_FAILED,
}
def file_url(file_id: str) -> str:
    """Where a stored output is downloadable: the FileService's REST mirror (the gRPC contract
    documents `url` as this path; the gateway makes it absolute). The domain knows only file ids."""
    return f"/v1/files/{file_id}/content"


def video(t: VideoTask, output_ttl: float) -> video_pb2.VideoGeneration:
    from google.rpc import code_pb2, status_pb2

    v = video_pb2.VideoGeneration(
        id=t.id, model=t.model, state=_STATES[t.state], progress=t.progress, create_time=timestamp(t.created_at),
        complete_time=timestamp(t.completed_at), prompt=t.prompt, seconds=t.seconds, size=f"{t.width}x{t.height}",
        cost=fmt(t.cost),
        outputs=[video_pb2.VideoOutput(url=file_url(fid), mime_type="video/mp4", size_bytes=size)
                 for fid, size in zip(t.file_ids, t.file_sizes, strict=False)],
    )
    if t.completed_at and t.state == VideoState.SUCCEEDED:
        v.expire_time.CopyFrom(_timestamp(t.completed_at + output_ttl))
    if t.state == VideoState.FAILED:
        v.error.CopyFrom(status_pb2.Status(code=code_pb2.UNAVAILABLE, message=t.error or "failed"))
    return v
