"""``agentapi.v1.TurnOptions`` to and from the domain's options, whose
``params`` are OpenAI's chat-completions request fields in wire shape."""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format

from agentapi import v1 as pb
from server.api.convert import ROUTING_MODE_NAMES, ROUTING_MODES
from server.domain.runs.options import TurnOptions

_FORMAT_TYPES = {
    pb.RESPONSE_FORMAT_TYPE_TEXT: "text",
    pb.RESPONSE_FORMAT_TYPE_JSON_OBJECT: "json_object",
    pb.RESPONSE_FORMAT_TYPE_JSON_SCHEMA: "json_schema",
}
_FORMAT_TYPES_TO_PROTO = {name: value for value, name in _FORMAT_TYPES.items()}
_MODES = {
    pb.TOOL_CHOICE_MODE_NONE: "none",
    pb.TOOL_CHOICE_MODE_AUTO: "auto",
    pb.TOOL_CHOICE_MODE_REQUIRED: "required",
    pb.TOOL_CHOICE_MODE_UNSPECIFIED: "",  # refused by validation as an unknown mode
}
_MODES_TO_PROTO = {name: value for value, name in _MODES.items() if name}
# Optional scalar fields whose proto and OpenAI names agree.
_SCALARS = (
    "parallel_tool_calls",
    "seed",
    "top_p",
    "frequency_penalty",
    "presence_penalty",
    "logprobs",
    "top_logprobs",
    "n",
    "max_completion_tokens",
)
_STRINGS = ("user", "reasoning_effort", "service_tier")


def plain(value: Any) -> Any:
    """A Struct-decoded value with integral floats back as ints: Struct keeps
    every number as a double, and upstreams refuse ``top_k: 40.0``."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [plain(item) for item in value]
    return value


def from_proto(options: pb.TurnOptions) -> TurnOptions:
    """The domain's options; validation happens in the turn."""
    params: dict[str, Any] = {}
    for name in _SCALARS:
        if options.HasField(name):
            params[name] = getattr(options, name)
    for name in _STRINGS:
        if getattr(options, name):
            params[name] = getattr(options, name)
    if options.stop:
        params["stop"] = list(options.stop)
    if options.logit_bias:
        params["logit_bias"] = plain(dict(options.logit_bias))
    if options.metadata:
        params["metadata"] = dict(options.metadata)
    if options.modalities:
        params["modalities"] = list(options.modalities)
    if options.HasField("response_format") and options.response_format.type:
        params["response_format"] = _response_format(options.response_format)
    choice = options.tool_choice.WhichOneof("choice") if options.HasField("tool_choice") else None
    if choice == "mode":
        params["tool_choice"] = _MODES.get(options.tool_choice.mode, "")
    elif choice == "function_name":
        params["tool_choice"] = {"type": "function", "function": {"name": options.tool_choice.function_name}}
    return TurnOptions(
        temperature=options.temperature if options.HasField("temperature") else None,
        max_output_tokens=options.max_output_tokens if options.HasField("max_output_tokens") else None,
        model=options.model,
        tools=[json_format.MessageToDict(t, preserving_proto_field_name=True) for t in options.tools] or None,
        params=params,
        extra_body=plain(json_format.MessageToDict(options.extra_body)) if options.HasField("extra_body") else {},
        routing_mode=ROUTING_MODE_NAMES.get(options.routing_mode, ""),
    )


def _response_format(value: pb.ResponseFormat) -> dict[str, Any]:
    result: dict[str, Any] = {"type": _FORMAT_TYPES.get(value.type, "")}
    if value.type == pb.RESPONSE_FORMAT_TYPE_JSON_SCHEMA:
        schema: dict[str, Any] = {"name": value.json_schema.name}
        if value.json_schema.description:
            schema["description"] = value.json_schema.description
        if value.json_schema.HasField("schema"):
            schema["schema"] = plain(json_format.MessageToDict(value.json_schema.schema))
        if value.json_schema.HasField("strict"):
            schema["strict"] = value.json_schema.strict
        result["json_schema"] = schema
    return result


def to_proto(stored: dict[str, Any] | None) -> pb.TurnOptions | None:
    """Stored options (OpenAI's request shape) as a proto; None when there are none."""
    if not stored:
        return None
    result = pb.TurnOptions(model=stored.get("model", ""))
    if "temperature" in stored:
        result.temperature = stored["temperature"]
    if "max_tokens" in stored:
        result.max_output_tokens = stored["max_tokens"]
    for name in _SCALARS:
        if name in stored:
            setattr(result, name, stored[name])
    for name in _STRINGS:
        setattr(result, name, stored.get(name, ""))
    result.stop.extend(stored.get("stop") or ())
    result.modalities.extend(stored.get("modalities") or ())
    result.logit_bias.update({k: float(v) for k, v in (stored.get("logit_bias") or {}).items()})
    result.metadata.update({k: str(v) for k, v in (stored.get("metadata") or {}).items()})
    for tool in stored.get("tools") or ():
        json_format.ParseDict(tool, result.tools.add(), ignore_unknown_fields=True)
    response_format = stored.get("response_format")
    if isinstance(response_format, dict):
        result.response_format.type = _FORMAT_TYPES_TO_PROTO.get(response_format.get("type", ""), 0)
        schema = response_format.get("json_schema") or {}
        if schema:
            result.response_format.json_schema.name = schema.get("name", "")
            result.response_format.json_schema.description = schema.get("description", "")
            if isinstance(schema.get("schema"), dict):
                result.response_format.json_schema.schema.update(schema["schema"])
            if "strict" in schema:
                result.response_format.json_schema.strict = bool(schema["strict"])
    choice = stored.get("tool_choice")
    if isinstance(choice, str) and choice in _MODES_TO_PROTO:
        result.tool_choice.mode = _MODES_TO_PROTO[choice]
    elif isinstance(choice, dict):
        result.tool_choice.function_name = (choice.get("function") or {}).get("name", "")
    if stored.get("extra_body"):
        result.extra_body.update(stored["extra_body"])
    result.routing_mode = ROUTING_MODES.get(stored.get("routing_mode", ""), 0)
    return result
