"""Pure conversions of a validated ``POST /v1/responses`` body (and of
conversation items) to agentapi.v1: InputMessages, ToolApprovals and
TurnOptions; and the body's validation itself, with OpenAI's ``param``."""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format

from agentapi import v1 as pb
from gateway.errors import bad_request
from gateway.openai import chat_convert
from gateway.openai import responses_schema as schema
from server.domain import history

AGENT_PREFIX = chat_convert.AGENT_PREFIX
# The name of the system input message that carries a response's
# ``instructions``: shown as ``instructions``, never as an input item.
INSTRUCTIONS_NAME = "instructions"
ROLES = {"user": pb.ROLE_USER, "system": pb.ROLE_SYSTEM, "developer": pb.ROLE_DEVELOPER, "assistant": pb.ROLE_ASSISTANT}


def parse(model: type[Any], raw: bytes) -> Any:
    """Validates a Responses or Conversations body against ``model``; a 400
    names the wrong field in ``param`` (:func:`chat_convert.parse_body`)."""
    return chat_convert.parse_body(model, raw, schema.FIELD_NAMES)


def _parts(content: str | list[Any]) -> tuple[str, list[pb.ContentPart]]:
    if isinstance(content, str):
        return content, []
    parts = []
    for part in content:
        if isinstance(part, schema.InputText):
            parts.append(pb.ContentPart(type="text", text=part.text))
        elif isinstance(part, schema.InputImage):
            if not part.image_url:
                raise bad_request("input_image needs an image_url (file ids are not supported)", "input")
            parts.append(pb.ContentPart(type="image_url", image_url=part.image_url, detail=part.detail or ""))
        elif isinstance(part, schema.InputFile):
            file = pb.FileContent(
                file_id=part.file_id or "", filename=part.filename or "", file_data=part.file_data or ""
            )
            parts.append(pb.ContentPart(type="file", file=file))
    text = "".join(p.text for p in parts)
    return text, (parts if any(p.type != "text" for p in parts) else [])


def input_messages(body: schema.ResponseRequest) -> tuple[list[pb.InputMessage], list[pb.ToolApproval]]:
    """The request's ``instructions`` and ``input`` as InputMessages (a
    ``function_call_output`` is a tool message, resent ``function_call`` items
    an assistant message), and its ``mcp_approval_response`` items as
    ToolApprovals. Resent reasoning items and item references are skipped:
    the server keeps those. Raises a 400 :class:`ApiError`."""
    messages: list[pb.InputMessage] = []
    approvals: list[pb.ToolApproval] = []
    if body.instructions:
        messages.append(pb.InputMessage(role=pb.ROLE_SYSTEM, content=body.instructions, name=INSTRUCTIONS_NAME))
    items = [schema.MessageItem(role="user", content=body.input)] if isinstance(body.input, str) else body.input
    for item in items or ():
        if isinstance(item, schema.MessageItem):
            text, parts = _parts(item.content)
            messages.append(pb.InputMessage(role=ROLES[item.role], content=text, content_parts=parts))
        elif isinstance(item, schema.FunctionCallItem):
            call = pb.ToolCall(id=item.call_id, type="function")
            call.function.name, call.function.arguments = item.name, item.arguments
            if messages and messages[-1].role == pb.ROLE_ASSISTANT and not messages[-1].content:
                messages[-1].tool_calls.append(call)
            else:
                messages.append(pb.InputMessage(role=pb.ROLE_ASSISTANT, tool_calls=[call]))
        elif isinstance(item, schema.FunctionCallOutputItem):
            output = item.output if isinstance(item.output, str) else _parts(item.output)[0]
            messages.append(pb.InputMessage(role=pb.ROLE_TOOL, tool_call_id=item.call_id, content=output))
        elif isinstance(item, schema.McpApprovalResponseItem):
            call_id = "call_" + item.approval_request_id.removeprefix("mcpr_")
            approvals.append(pb.ToolApproval(tool_call_id=call_id, approve=item.approve, reason=item.reason or ""))
    return messages, approvals


def function_tools(value: list[Any] | None) -> list[pb.Tool]:
    """The request's function tools as Tools (MCP tools are refused by the handler)."""
    result = []
    for tool in value or ():
        if not isinstance(tool, schema.FunctionTool):
            continue
        function = pb.FunctionDefinition(name=tool.name, description=tool.description or "")
        if tool.parameters is not None:
            function.parameters.update(tool.parameters)
        if tool.strict is not None:
            function.strict = tool.strict
        result.append(pb.Tool(type="function", function=function))
    return result


def turn_options(body: schema.ResponseRequest) -> pb.TurnOptions:
    """Every Responses parameter that has a TurnOptions field; the rest of the
    unknown top-level fields go as ``extra_body``. Raises a 400 :class:`ApiError`."""
    options = pb.TurnOptions()
    for name in ("temperature", "top_p", "parallel_tool_calls", "service_tier"):
        if (value := getattr(body, name)) is not None:
            setattr(options, name, value)
    if body.max_output_tokens is not None:
        options.max_completion_tokens = body.max_output_tokens
    if body.top_logprobs:
        options.logprobs, options.top_logprobs = True, body.top_logprobs
    if user := (body.safety_identifier or body.user):
        options.user = user
    options.metadata.update(body.metadata or {})
    if body.reasoning is not None and body.reasoning.effort not in (None, "none"):
        options.reasoning_effort = body.reasoning.effort
    if body.text is not None and body.text.format is not None:
        fmt = body.text.format
        options.response_format.type = chat_convert.RESPONSE_FORMATS[fmt.type]
        if fmt.type == "json_schema":
            if not fmt.name:
                raise bad_request("text.format.name is required for json_schema", "text.format.name")
            spec = options.response_format.json_schema
            spec.name, spec.description = fmt.name, fmt.description or ""
            if fmt.schema_ is not None:
                spec.schema.update(fmt.schema_)
            if fmt.strict is not None:
                spec.strict = fmt.strict
    if isinstance(body.tool_choice, str):
        options.tool_choice.mode = chat_convert.TOOL_CHOICE_MODES[body.tool_choice]
    elif body.tool_choice is not None:
        options.tool_choice.function_name = body.tool_choice.name
    options.tools.extend(function_tools(body.tools))
    if body.model and not body.model.startswith(AGENT_PREFIX):
        options.model = body.model
    extra = {k: v for k, v in (body.model_extra or {}).items()}
    for name, value in extra.items():
        try:
            schema.struct_value(value, 1)
        except ValueError as exc:
            raise bad_request(f"{name}: {exc}", name) from None
    if extra:
        options.extra_body.update(extra)
    return options


def input_tokens(body: schema.ResponseRequest) -> int:
    """The request's input tokens as agentapi counts a prompt (``server.domain.history``:
    tiktoken for OpenAI-family models, one per 4 characters otherwise): each
    message of its instructions and input with its overhead, plus its function
    tools' JSON. Previous responses and a conversation are not read (OpenAI's
    endpoint counts what the request holds, too). Raises a 400 :class:`ApiError`."""
    messages, _ = input_messages(body)
    model = body.model or ""
    total = 0
    for message in messages:
        parts = [
            {"type": "text", "text": p.text} if p.type == "text" else {"type": p.type} for p in message.content_parts
        ]
        calls = [{"function": {"name": c.function.name, "arguments": c.function.arguments}} for c in message.tool_calls]
        total += history.count_message({"content": parts or message.content, "tool_calls": calls}, model)
    tools = [json_format.MessageToDict(t, preserving_proto_field_name=True) for t in function_tools(body.tools)]
    return total + history.count_tools(tools, model)
