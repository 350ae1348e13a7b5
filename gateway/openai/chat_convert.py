"""Pure conversions between OpenAI's chat-completions wire format and agentapi.v1:
a validated request to InputMessages and TurnOptions, a stored reply to a
``chat.completion``, stream events to ``chat.completion.chunk`` texts."""

from __future__ import annotations

import json
import time
from typing import Any

from google.protobuf import struct_pb2
from pydantic import ValidationError

from agentapi import v1 as pb
from gateway.errors import bad_request
from gateway.openai import chat_schema as schema

AGENT_PREFIX = "agent:"
ROLES = {
    "system": pb.ROLE_SYSTEM,
    "developer": pb.ROLE_DEVELOPER,
    "user": pb.ROLE_USER,
    "assistant": pb.ROLE_ASSISTANT,
    "tool": pb.ROLE_TOOL,
}
TOOL_CHOICE_MODES = {
    "none": pb.TOOL_CHOICE_MODE_NONE,
    "auto": pb.TOOL_CHOICE_MODE_AUTO,
    "required": pb.TOOL_CHOICE_MODE_REQUIRED,
}
RESPONSE_FORMATS = {
    "text": pb.RESPONSE_FORMAT_TYPE_TEXT,
    "json_object": pb.RESPONSE_FORMAT_TYPE_JSON_OBJECT,
    "json_schema": pb.RESPONSE_FORMAT_TYPE_JSON_SCHEMA,
}


# --------------------------------------------------------------------------- #
# Request
# --------------------------------------------------------------------------- #


def param_of(loc: tuple[int | str, ...], field_names: frozenset[str] = schema.FIELD_NAMES) -> str | None:
    """A pydantic error location as the request field OpenAI names in
    ``param``: ``messages[0].role``. Union-member labels and discriminator
    tags are dropped (they are not request fields: not in ``field_names``),
    and so are map keys."""
    param = ""
    for item in loc:
        if isinstance(item, int):
            param += f"[{item}]"
        elif item in field_names:
            param += f".{item}" if param else item
    return param or None


def parse_body(model: type[Any], raw: bytes, field_names: frozenset[str]) -> Any:
    """Validates a body against the pydantic ``model`` (chat completions,
    responses). Raises a 400 :class:`ApiError` for malformed JSON (a lone
    surrogate, nesting past 200 levels included) or a wrong type or range,
    with ``param`` the field that is wrong (named from ``field_names``)."""
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False)
        if errors[0]["type"] == "json_invalid":
            raise bad_request(f"the body is not valid JSON: {errors[0]['ctx'].get('error', '')}") from None
        if errors[0]["type"] == "model_type" and not errors[0]["loc"]:
            raise bad_request("the body must be a JSON object") from None
        # Of a union's errors, the deepest is the member the caller meant: a list
        # of parts with one bad part, rather than "content is not a string".
        param = param_of(max(errors, key=lambda e: len(e["loc"]))["loc"], field_names)
        reasons = list(dict.fromkeys(e["msg"] for e in errors if param_of(e["loc"], field_names) == param))
        raise bad_request(f"{param or 'body'}: {'; or '.join(reasons[:3])}", param) from None


def parse_request(raw: bytes) -> schema.ChatCompletionRequest:
    """Validates a chat-completions body (see :func:`parse_body`)."""
    result: schema.ChatCompletionRequest = parse_body(schema.ChatCompletionRequest, raw, schema.FIELD_NAMES)
    return result


def _struct(value: dict[str, Any]) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    struct.update(value)
    return struct


def _part(part: Any) -> pb.ContentPart | None:
    if isinstance(part, schema.TextPart):
        return pb.ContentPart(type="text", text=part.text)
    if isinstance(part, schema.ImagePart):
        return pb.ContentPart(type="image_url", image_url=part.image_url.url, detail=part.image_url.detail or "")
    if isinstance(part, schema.AudioPart):
        audio = pb.InputAudio(data=part.input_audio.data, format=part.input_audio.format)
        return pb.ContentPart(type="input_audio", input_audio=audio)
    if isinstance(part, schema.FilePart):
        file = pb.FileContent(
            file_id=part.file.file_id or "", filename=part.file.filename or "", file_data=part.file.file_data or ""
        )
        return pb.ContentPart(type="file", file=file)
    return None  # a refusal part of a resent assistant message: the model's own words, not input


def input_message(message: schema.Message) -> pb.InputMessage:
    """One OpenAI message as an InputMessage; content parts keep their type,
    ``detail``, audio and file, and their text parts are also joined into ``content``."""
    converted = pb.InputMessage(
        role=ROLES[message.role], tool_call_id=message.tool_call_id or "", name=message.name or ""
    )
    if isinstance(message.content, str):
        converted.content = message.content
    elif message.content:
        parts = [p for p in map(_part, message.content) if p is not None]
        converted.content_parts.extend(parts)
        converted.content = "".join(p.text for p in parts)
    for call in message.tool_calls or ():
        converted.tool_calls.add(
            id=call.id,
            type=call.type,
            function=pb.FunctionCall(name=call.function.name, arguments=call.function.arguments),
        )
    return converted


def tools(value: list[schema.Tool] | None) -> list[pb.Tool]:
    """OpenAI ``tools`` as Tools."""
    result = []
    for tool in value or ():
        function = pb.FunctionDefinition(name=tool.function.name, description=tool.function.description or "")
        if tool.function.parameters is not None:
            function.parameters.CopyFrom(_struct(tool.function.parameters))
        if tool.function.strict is not None:
            function.strict = tool.function.strict
        result.append(pb.Tool(type=tool.type, function=function))
    return result


def _response_format(value: schema.ResponseFormat) -> pb.ResponseFormat:
    converted = pb.ResponseFormat(type=RESPONSE_FORMATS[value.type])
    if value.json_schema is not None:
        spec = value.json_schema
        converted.json_schema.name = spec.name
        converted.json_schema.description = spec.description or ""
        if spec.schema_ is not None:
            converted.json_schema.schema.CopyFrom(_struct(spec.schema_))
        if spec.strict is not None:
            converted.json_schema.strict = spec.strict
    return converted


def _tool_choice(value: str | schema.NamedToolChoice) -> pb.ToolChoice:
    if isinstance(value, str):
        return pb.ToolChoice(mode=TOOL_CHOICE_MODES[value])
    return pb.ToolChoice(function_name=value.function.name)


def extra_body(body: schema.ChatCompletionRequest) -> struct_pb2.Struct | None:
    """The unknown top-level fields, unchanged, or None. Raises a 400
    :class:`ApiError` naming a field a Struct cannot carry exactly."""
    extra = body.model_extra or {}
    for name, value in extra.items():
        try:
            schema.struct_value(value, 1)
        except ValueError as exc:
            raise bad_request(f"{name}: {exc}", name) from None
    return _struct(extra) if extra else None


def turn_options(body: schema.ChatCompletionRequest, continuing: bool) -> pb.TurnOptions:
    """Every chat-completions parameter as TurnOptions. ``continuing`` (an
    existing session): ``model`` and ``tools`` apply to this turn too; a new
    session carries them itself. Raises a 400 :class:`ApiError` (see :func:`extra_body`)."""
    options = pb.TurnOptions()
    scalars = (
        "temperature",
        "top_p",
        "max_completion_tokens",
        "n",
        "seed",
        "frequency_penalty",
        "presence_penalty",
        "logprobs",
        "top_logprobs",
        "user",
        "reasoning_effort",
        "service_tier",
        "parallel_tool_calls",
    )
    for name in scalars:
        if (value := getattr(body, name)) is not None:
            setattr(options, name, value)
    if body.max_tokens is not None:
        options.max_output_tokens = body.max_tokens
    if body.stop is not None:
        options.stop.extend([body.stop] if isinstance(body.stop, str) else body.stop)
    options.logit_bias.update(body.logit_bias or {})
    options.metadata.update(body.metadata or {})
    options.modalities.extend(body.modalities or ())
    if body.response_format is not None:
        options.response_format.CopyFrom(_response_format(body.response_format))
    if body.tool_choice is not None:
        options.tool_choice.CopyFrom(_tool_choice(body.tool_choice))
    if (extra := extra_body(body)) is not None:
        options.extra_body.CopyFrom(extra)
    if continuing:
        if body.model and not body.model.startswith(AGENT_PREFIX):
            options.model = body.model
        options.tools.extend(tools(body.tools))
    return options


ROUTING_HEADER = "X-Routing-Mode"
ROUTING_MODES = {
    "passthrough": pb.ROUTING_MODE_PASSTHROUGH,
    "reasoning": pb.ROUTING_MODE_REASONING,
    "auto": pb.ROUTING_MODE_AUTO,
    "orchestration": pb.ROUTING_MODE_ORCHESTRATION,
}


def routing_mode(header: str | None) -> int:
    """The ``X-Routing-Mode`` header as a RoutingMode (unset: 0, the agent's
    default). Raises a 400 :class:`ApiError` for an unknown mode."""
    if header is None or not header.strip():
        return pb.ROUTING_MODE_UNSPECIFIED
    mode = ROUTING_MODES.get(header.strip().lower())
    if mode is None:
        raise bad_request(f"{ROUTING_HEADER} must be one of {', '.join(ROUTING_MODES)}", ROUTING_HEADER)
    return mode


def after_last_reply(messages: list[pb.InputMessage]) -> list[pb.InputMessage]:
    """The messages after the last assistant message. OpenAI SDK callers
    resend the whole conversation each call; the stored session already holds
    everything up to its last reply, so only what follows is new (for example
    the ``tool`` messages answering that reply's tool calls)."""
    for index in range(len(messages) - 1, -1, -1):
        if messages[index].role == pb.ROLE_ASSISTANT:
            return messages[index + 1 :]
    return messages


# --------------------------------------------------------------------------- #
# Response
# --------------------------------------------------------------------------- #


def completion_id(message_id: str) -> str:
    """The ``chatcmpl-`` id of a reply, the same for the stream and a replay."""
    return f"chatcmpl-{message_id}" if message_id else ""


def _top(item: pb.TopLogprob | pb.TokenLogprob) -> dict[str, Any]:
    return {"token": item.token, "logprob": item.logprob, "bytes": list(item.bytes) if item.bytes else None}


def logprobs(items: Any) -> dict[str, Any] | None:
    """OpenAI's ``choices[].logprobs`` for token logprobs, or None when there are none."""
    if not items:
        return None
    content = [{**_top(item), "top_logprobs": [_top(top) for top in item.top_logprobs]} for item in items]
    return {"content": content, "refusal": None}


def tool_calls(message: pb.Message) -> list[dict[str, Any]]:
    """A stored message's tool calls in OpenAI's shape."""
    return [
        {
            "id": c.id,
            "type": c.type or "function",
            "function": {"name": c.function.name, "arguments": c.function.arguments},
        }
        for c in message.tool_calls
    ]


def usage(message: pb.Message) -> dict[str, Any]:
    """OpenAI's usage block, with ``completion_tokens_details.reasoning_tokens`` when reported."""
    block: dict[str, Any] = {
        "prompt_tokens": message.usage.prompt_tokens,
        "completion_tokens": message.usage.completion_tokens,
        "total_tokens": message.usage.total_tokens,
    }
    if message.usage.reasoning_tokens:
        block["completion_tokens_details"] = {"reasoning_tokens": message.usage.reasoning_tokens}
    return block


def completion(message: pb.Message, requested_model: str) -> dict[str, Any]:
    """A ``chat.completion`` for a stored assistant message; ``model`` is the
    model that answered (``requested_model`` only when the reply names none)."""
    reply: dict[str, Any] = {
        "role": "assistant",
        "content": message.content or None,
        "refusal": message.refusal or None,
    }
    if message.reasoning_content:
        reply["reasoning_content"] = message.reasoning_content
    if calls := tool_calls(message):
        reply["tool_calls"] = calls
    choice = {
        "index": 0,
        "message": reply,
        "logprobs": logprobs(message.logprobs),
        "finish_reason": message.finish_reason or "stop",
    }
    return {
        "id": completion_id(message.id),
        "object": "chat.completion",
        "created": message.create_time.seconds or int(time.time()),
        "model": message.model or requested_model,
        "choices": [choice],
        "usage": usage(message),
    }


class ChunkWriter:
    """Builds the ``chat.completion.chunk`` texts of one streamed turn. ``id``
    and ``model`` come from the turn's TurnStarted event (:meth:`started`)."""

    def __init__(self, requested_model: str, include_usage: bool) -> None:
        self.model = requested_model
        self.include_usage = include_usage
        self.id = ""
        self.created = int(time.time())
        self._sent_role = False
        self._started = False

    def started(self, event: pb.TurnStarted) -> None:
        """Takes the reply's id, the answering model and the start time."""
        self.id = completion_id(event.message_id)
        self.model = event.model or self.model
        self.created = event.create_time.seconds or self.created
        self._started = True

    def _chunk(self, choices: list[dict[str, Any]], **extra: Any) -> str:
        body = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": choices,
            **extra,
        }
        return json.dumps(body, separators=(",", ":"))

    def delta(self, delta: pb.Delta) -> str:
        """A chunk for a reply fragment; the first one carries the role."""
        out: dict[str, Any] = {}
        if not self._sent_role:
            out["role"] = "assistant"
            self._sent_role = True
        if delta.content:
            out["content"] = delta.content
        if delta.refusal:
            out["refusal"] = delta.refusal
        if delta.reasoning:  # the field LiteLLM and DeepSeek stream, and chat UIs show
            out["reasoning_content"] = delta.reasoning
        if delta.tool_calls:
            out["tool_calls"] = []
            for fragment in delta.tool_calls:
                call: dict[str, Any] = {"index": fragment.index, "function": {"arguments": fragment.arguments}}
                if fragment.id:
                    call["id"] = fragment.id
                    call["type"] = "function"
                if fragment.name:
                    call["function"]["name"] = fragment.name
                out["tool_calls"].append(call)
        return self._chunk([{"index": 0, "delta": out, "logprobs": logprobs(delta.logprobs), "finish_reason": None}])

    def final(self, message: pb.Message) -> list[str]:
        """The finishing chunk, and the usage chunk when the caller asked for it."""
        self.id = self.id or completion_id(message.id)
        if not self._started:
            self.model = message.model or self.model
        finish = {"index": 0, "delta": {}, "logprobs": None, "finish_reason": message.finish_reason or "stop"}
        chunks = [self._chunk([finish])]
        if self.include_usage:
            chunks.append(self._chunk([], usage=usage(message)))
        return chunks


def check_model(model: str | None) -> str:
    """``model``, required to start a session. Raises a 400 :class:`ApiError`."""
    if not model:
        raise bad_request("model is required", "model")
    return model
