"""Messages between the domain and agentapi.v1: stored messages, input
messages, content parts, and the events of a streamed turn."""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format

from agentapi import v1 as pb
from server.api import turn_options
from server.api.convert import ROUTING_MODES, struct, timestamp
from server.api.status import to_status
from server.domain.errors import AgentAPIError
from server.domain.runs import Delta, InputMessage
from server.store.models import MessageRow

ROLE_TO_PROTO = {
    "system": pb.ROLE_SYSTEM,
    "user": pb.ROLE_USER,
    "assistant": pb.ROLE_ASSISTANT,
    "tool": pb.ROLE_TOOL,
    "developer": pb.ROLE_DEVELOPER,
}
ROLE_FROM_PROTO = {value: key for key, value in ROLE_TO_PROTO.items()}
STATUS_TO_PROTO = {
    "in_progress": pb.MESSAGE_STATUS_IN_PROGRESS,
    "completed": pb.MESSAGE_STATUS_COMPLETED,
    "cancelled": pb.MESSAGE_STATUS_CANCELLED,
    "failed": pb.MESSAGE_STATUS_FAILED,
    "requires_action": pb.MESSAGE_STATUS_REQUIRES_ACTION,
}


def tool_call(call: dict[str, Any]) -> pb.ToolCall:
    """A stored tool call (OpenAI's shape, plus its executor) as a proto."""
    function = call.get("function") or {}
    return pb.ToolCall(
        id=call.get("id", ""),
        type=call.get("type", "function"),
        function=pb.FunctionCall(name=function.get("name", ""), arguments=function.get("arguments", "")),
        executor=call.get("executor", "client"),
        awaiting_approval=bool(call.get("awaiting_approval")),
    )


def message(row: MessageRow) -> pb.Message:
    """A stored message as a proto."""
    result = pb.Message(
        id=row.id,
        session_id=row.session_id,
        sequence=row.sequence,
        role=ROLE_TO_PROTO[row.role],
        content=row.content,
        tool_calls=[tool_call(c) for c in row.tool_calls or ()],
        tool_call_id=row.tool_call_id,
        name=row.name,
        model=row.model,
        status=STATUS_TO_PROTO[row.status],
        finish_reason=row.finish_reason,
        usage=pb.Usage(
            prompt_tokens=row.prompt_tokens,
            completion_tokens=row.completion_tokens,
            total_tokens=row.prompt_tokens + row.completion_tokens,
            cost_usd=float(row.cost_usd),
            reasoning_tokens=row.reasoning_tokens or 0,
        ),
        time_to_first_token_ms=row.time_to_first_token_ms,
        duration_ms=row.duration_ms,
        upstream_request_id=row.upstream_request_id,
        attempts=[pb.ModelAttempt(**attempt) for attempt in row.attempts or ()],
        metadata=struct(row.metadata_),
        create_time=timestamp(row.create_time),
        update_time=timestamp(row.update_time),
        token_count=row.token_count,
        content_parts=[content_part(p) for p in row.content_parts or ()],
        logprobs=[token_logprob(entry) for entry in row.logprobs or ()],
        refusal=row.refusal or "",
        executor=row.executor,
        step=row.step,
        reasoning_content=row.reasoning_content or "",
        superseded_by=row.superseded_by or "",
        delete_time=timestamp(row.delete_time),
        expire_time=timestamp(row.expire_time),
        purge_time=timestamp(row.purge_time),
        thinking_blocks=[thinking_block(block) for block in row.thinking_blocks or ()],
    )
    if row.routing:
        result.routing.CopyFrom(routing(row.routing))
    options = turn_options.to_proto(row.options)
    if options is not None:
        result.options.CopyFrom(options)
    if row.prompt_last_sequence:
        result.prompt_messages.first = row.prompt_first_sequence
        result.prompt_messages.last = row.prompt_last_sequence
    for name in ("delete_time", "expire_time", "purge_time"):  # AIP-164: set once deleted
        value = getattr(row, name, None)
        if value is not None:
            getattr(result, name).CopyFrom(timestamp(value))
    if row.error:
        result.error.CopyFrom(to_status(AgentAPIError(row.error["code"], row.error["reason"], row.error["message"])))
    return result


def input_message(message: pb.InputMessage) -> InputMessage:
    """A caller's input message; an unknown role becomes ``""`` and fails validation."""
    return InputMessage(
        role=ROLE_FROM_PROTO.get(message.role, ""),
        content=message.content,
        tool_call_id=message.tool_call_id,
        tool_calls=[json_format.MessageToDict(c, preserving_proto_field_name=True) for c in message.tool_calls],
        name=message.name,
        content_parts=[content_part_to_json(p) for p in message.content_parts],
    )


def content_part_to_json(part: pb.ContentPart) -> dict[str, Any]:
    """A content part in OpenAI's shape (``text``, ``image_url`` with its
    ``detail``, ``input_audio``, ``file``); an unknown type keeps only its type."""
    if part.type == "image_url":
        image = {"url": part.image_url, **({"detail": part.detail} if part.detail else {})}
        return {"type": "image_url", "image_url": image}
    if part.type == "input_audio":
        return {
            "type": "input_audio",
            "input_audio": {"data": part.input_audio.data, "format": part.input_audio.format},
        }
    if part.type == "file":
        return {"type": "file", "file": json_format.MessageToDict(part.file, preserving_proto_field_name=True)}
    if part.type == "text":
        return {"type": "text", "text": part.text}
    return {"type": part.type}


def content_part(part: dict[str, Any]) -> pb.ContentPart:
    """An OpenAI content part as a proto."""
    image = part.get("image_url") or {}
    audio = part.get("input_audio") or {}
    return pb.ContentPart(
        type=part.get("type", ""),
        text=part.get("text", ""),
        image_url=image.get("url", ""),
        detail=image.get("detail", ""),
        input_audio=pb.InputAudio(**audio) if audio else None,
        file=pb.FileContent(**part["file"]) if part.get("file") else None,
    )


def token_logprob(entry: dict[str, Any]) -> pb.TokenLogprob:
    """An OpenAI ``logprobs.content`` entry as a proto."""
    return pb.TokenLogprob(
        token=entry.get("token", ""),
        logprob=entry.get("logprob") or 0.0,
        bytes=bytes(entry.get("bytes") or ()),
        top_logprobs=[
            pb.TopLogprob(token=t.get("token", ""), logprob=t.get("logprob") or 0.0, bytes=bytes(t.get("bytes") or ()))
            for t in entry.get("top_logprobs") or ()
        ],
    )


def delta(value: Delta) -> pb.Delta:
    """A reply fragment as a proto."""
    return pb.Delta(
        sequence_number=value.sequence_number,
        content=value.content,
        tool_calls=[
            pb.ToolCallDelta(index=f.index, id=f.id, name=f.name, arguments=f.arguments) for f in value.tool_calls
        ],
        logprobs=[token_logprob(entry) for entry in value.logprobs],
        refusal=value.refusal,
        reasoning=value.reasoning,
    )


def tool_call_started(row: MessageRow, call: dict[str, Any]) -> pb.ToolCallStarted:
    """A server-side tool call about to run: its IN_PROGRESS tool message and the model's call."""
    return pb.ToolCallStarted(
        tool_call_id=row.tool_call_id,
        name=row.name,
        arguments=str((call.get("function") or {}).get("arguments", "")),
        executor=row.executor,
        step=row.step,
    )


def turn_started(reply: MessageRow) -> pb.TurnStarted:
    """The first event of a turn: the reply's id and the model answering."""
    return pb.TurnStarted(message_id=reply.id, model=reply.model, create_time=timestamp(reply.create_time))


_BLOCK = ("type", "thinking", "signature", "data")


def thinking_block(block: dict[str, Any]) -> pb.ThinkingBlock:
    """A stored thinking block as a proto."""
    return pb.ThinkingBlock(**{key: str(value) for key, value in block.items() if key in _BLOCK})


def routing(decision: dict[str, Any]) -> pb.RoutingDecision:
    """A stored routing decision as a proto."""
    return pb.RoutingDecision(
        mode=ROUTING_MODES.get(decision.get("mode", ""), 0),
        requested=ROUTING_MODES.get(decision.get("requested", ""), 0),
        reason=decision.get("reason", ""),
        classifier_model=decision.get("classifier_model", ""),
        classifier_latency_ms=int(decision.get("classifier_latency_ms") or 0),
        classifier_tokens=int(decision.get("classifier_tokens") or 0),
    )
