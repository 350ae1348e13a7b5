"""Translation between OpenAI's chat-completions wire format and agentapi.v1."""

from __future__ import annotations

import json
import time
from typing import Any

from google.protobuf import json_format

from agentapi import v1 as pb
from gateway.errors import ApiError, openai_error

ROLES = {
    "system": pb.ROLE_SYSTEM,
    "developer": pb.ROLE_SYSTEM,
    "user": pb.ROLE_USER,
    "assistant": pb.ROLE_ASSISTANT,
    "tool": pb.ROLE_TOOL,
}
AGENT_PREFIX = "agent:"


def bad_request(message: str, param: str | None = None) -> ApiError:
    """A 400 with OpenAI's ``invalid_request_error`` body."""
    return ApiError(400, openai_error(400, message, "INVALID_REQUEST", param))


def _content(content: Any, param: str) -> tuple[str, list[pb.ContentPart]]:
    """Content as (text, parts): a string, or a list of ``text`` and
    ``image_url`` content parts (the text parts are also joined into the text)."""
    if content is None:
        return "", []
    if isinstance(content, str):
        return content, []
    if isinstance(content, list):
        parts = []
        for index, part in enumerate(content):
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "text":
                parts.append(pb.ContentPart(type="text", text=str(part.get("text", ""))))
            elif kind == "image_url":
                image = part.get("image_url")
                url = image.get("url") if isinstance(image, dict) else image
                if not isinstance(url, str):
                    raise bad_request("an image_url part needs image_url.url", f"{param}[{index}].image_url")
                parts.append(pb.ContentPart(type="image_url", image_url=url))
            else:
                raise bad_request("content parts must be text or image_url", f"{param}[{index}].type")
        return "".join(p.text for p in parts), parts
    raise bad_request("content must be a string or a list of content parts", param)


def input_messages(messages: Any) -> list[pb.InputMessage]:
    """OpenAI ``messages`` as InputMessages. Raises a 400 ApiError for a shape error."""
    if not isinstance(messages, list) or not messages:
        raise bad_request("messages must be a non-empty array", "messages")
    result = []
    for index, message in enumerate(messages):
        param = f"messages[{index}]"
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            raise bad_request("each message needs a role: system, developer, user, assistant or tool", f"{param}.role")
        text, parts = _content(message.get("content"), f"{param}.content")
        converted = pb.InputMessage(
            role=ROLES[message["role"]],
            content=text,
            content_parts=parts,
            tool_call_id=str(message.get("tool_call_id") or ""),
            name=str(message.get("name") or ""),
        )
        for call in message.get("tool_calls") or ():
            function = call.get("function") or {}
            converted.tool_calls.add(
                id=str(call.get("id", "")),
                type=str(call.get("type", "function")),
                function=pb.FunctionCall(
                    name=str(function.get("name", "")), arguments=str(function.get("arguments", ""))
                ),
            )
        result.append(converted)
    return result


def tools(value: Any) -> list[pb.Tool]:
    """OpenAI ``tools`` as Tools. Raises a 400 ApiError for a shape error."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise bad_request("tools must be an array", "tools")
    try:
        return [json_format.ParseDict(tool, pb.Tool(), ignore_unknown_fields=True) for tool in value]
    except (json_format.ParseError, AttributeError, TypeError) as exc:
        raise bad_request(f"invalid tool definition: {exc}", "tools") from exc


def turn_options(body: dict[str, Any]) -> pb.TurnOptions:
    """``temperature`` and ``max_tokens``/``max_completion_tokens`` as TurnOptions."""
    options = pb.TurnOptions()
    temperature = body.get("temperature")
    if temperature is not None:
        if not isinstance(temperature, (int, float)):
            raise bad_request("temperature must be a number", "temperature")
        options.temperature = float(temperature)
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if max_tokens is not None:
        if not isinstance(max_tokens, int):
            raise bad_request("max_tokens must be an integer", "max_tokens")
        options.max_output_tokens = max_tokens
    return options


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


def usage(message: pb.Message) -> dict[str, int]:
    """OpenAI's usage block."""
    return {
        "prompt_tokens": message.usage.prompt_tokens,
        "completion_tokens": message.usage.completion_tokens,
        "total_tokens": message.usage.total_tokens,
    }


def completion(message: pb.Message, model: str) -> dict[str, Any]:
    """A ``chat.completion`` object for a stored assistant message."""
    reply: dict[str, Any] = {"role": "assistant", "content": message.content or None}
    calls = tool_calls(message)
    if calls:
        reply["tool_calls"] = calls
    return {
        "id": f"chatcmpl-{message.id}",
        "object": "chat.completion",
        "created": message.create_time.seconds or int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": reply, "finish_reason": message.finish_reason or "stop"}],
        "usage": usage(message),
    }


class ChunkWriter:
    """Builds ``chat.completion.chunk`` JSON texts for one streamed turn."""

    def __init__(self, model: str, include_usage: bool) -> None:
        self.model = model
        self.include_usage = include_usage
        self.id = ""
        self.created = int(time.time())
        self._sent_role = False

    def _chunk(self, delta: dict[str, Any], finish_reason: str | None = None, **extra: Any) -> str:
        choices = [{"index": 0, "delta": delta, "finish_reason": finish_reason}]
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
        return self._chunk(out)

    def final(self, message: pb.Message) -> list[str]:
        """The finishing chunk, and the usage chunk when the caller asked for it."""
        chunks = [self._chunk({}, message.finish_reason or "stop")]
        if self.include_usage:
            body = {
                "id": self.id,
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": self.model,
                "choices": [],
                "usage": usage(message),
            }
            chunks.append(json.dumps(body, separators=(",", ":")))
        return chunks
