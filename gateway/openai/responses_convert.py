"""Pure conversions from agentapi.v1 to OpenAI's Responses wire format: stored
rows to output and input items, and a turn's rows to a ``response`` object
(the request side is gateway/openai/responses_request.py, the ids
gateway/openai/responses_ids.py, re-exported here).

A response is one agentapi turn: its input items are the turn's step-0
messages, its output items the messages of its steps (from 1).
"""

from __future__ import annotations

import time
from typing import Any

from google.protobuf import json_format

from agentapi import v1 as pb
from gateway.errors import from_status
from gateway.openai import chat_convert
from gateway.openai.responses_ids import (
    call_suffix,
    function_call_item_id,
    function_output_item_id,
    input_item_id,
    message_item_id,
    reasoning_item_id,
    response_id,
)
from gateway.openai.responses_request import INSTRUCTIONS_NAME, ROLES

AGENT_PREFIX = chat_convert.AGENT_PREFIX
ROLE_NAMES = {value: key for key, value in ROLES.items()}


# --------------------------------------------------------------------------- #
# Items
# --------------------------------------------------------------------------- #


def _status(message: pb.Message) -> str:
    if message.status in (pb.MESSAGE_STATUS_COMPLETED, pb.MESSAGE_STATUS_REQUIRES_ACTION):
        return "incomplete" if message.finish_reason == "length" else "completed"
    if message.status == pb.MESSAGE_STATUS_IN_PROGRESS:
        return "in_progress"
    return "incomplete"


def reasoning_item(item_id: str, text: str) -> dict[str, Any]:
    """A reasoning item with its text as ``reasoning_text`` content."""
    return {"type": "reasoning", "id": item_id, "summary": [], "content": [{"type": "reasoning_text", "text": text}]}


def text_part(text: str) -> dict[str, Any]:
    """An ``output_text`` content part."""
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def message_item(item_id: str, status: str, text: str, refusal: str = "") -> dict[str, Any]:
    """An assistant message item: its text, or its refusal."""
    content = [{"type": "refusal", "refusal": refusal}] if refusal else [text_part(text)]
    return {"type": "message", "id": item_id, "status": status, "role": "assistant", "content": content}


def function_call_item(call_id: str, name: str, arguments: str, status: str = "completed") -> dict[str, Any]:
    """A ``function_call`` item."""
    return {
        "type": "function_call",
        "id": function_call_item_id(call_id),
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
        "status": status,
    }


def function_output_item(call_id: str, output: str) -> dict[str, Any]:
    """A ``function_call_output`` item."""
    return {
        "type": "function_call_output",
        "id": function_output_item_id(call_id),
        "call_id": call_id,
        "output": output,
        "status": "completed",
    }


MCP_EXECUTOR = "mcp:"


def is_mcp(executor: str) -> bool:
    """Whether a tool call ran (or waits to run) on a registered MCP server."""
    return executor.startswith(MCP_EXECUTOR)


def mcp_call_item(
    call_id: str, executor: str, name: str, arguments: str, output: str | None, failed: bool = False
) -> dict[str, Any]:
    """An ``mcp_call`` item: ``server_label`` is the registered MCP server's
    id, ``name`` the tool's own name (the model sees ``<server>__<tool>``)."""
    label = executor[len(MCP_EXECUTOR) :]
    done = output is not None
    return {
        "type": "mcp_call",
        "id": f"mcp_{call_suffix(call_id)}",
        "server_label": label,
        "name": name.removeprefix(f"{label}__"),
        "arguments": arguments,
        "output": None if failed else output,
        "error": output if failed else None,
        "status": ("failed" if failed else "completed") if done else "in_progress",
    }


def mcp_approval_request_item(call_id: str, executor: str, name: str, arguments: str) -> dict[str, Any]:
    """An ``mcp_approval_request`` item for a call awaiting approval; answer it
    with an ``mcp_approval_response`` naming its id."""
    label = executor[len(MCP_EXECUTOR) :]
    return {
        "type": "mcp_approval_request",
        "id": f"mcpr_{call_suffix(call_id)}",
        "server_label": label,
        "name": name.removeprefix(f"{label}__"),
        "arguments": arguments,
    }


def tool_calls_by_id(rows: list[pb.Message]) -> dict[str, pb.ToolCall]:
    """Every tool call of ``rows`` by its id."""
    return {call.id: call for row in rows for call in row.tool_calls}


def output_items(
    rows: list[pb.Message], reply_id: str, calls: dict[str, pb.ToolCall] | None = None
) -> list[dict[str, Any]]:
    """The output items of a turn's rows of steps 1 and on, in order: per
    assistant message its reasoning, text (or refusal) and function calls;
    per server tool message its output. A call on an MCP server is one
    ``mcp_call`` item holding its output (or an ``mcp_approval_request``
    while it waits for approval); ``calls`` finds the calls of a turn's
    results made in an earlier turn (an approval's continuation). Texts and
    reasonings are numbered in order, as the stream numbers them."""
    calls = {**(calls or {}), **tool_calls_by_id(rows)}
    results = {row.tool_call_id: row for row in rows if row.role == pb.ROLE_TOOL}
    mine = {call.id for row in rows for call in row.tool_calls}
    items: list[dict[str, Any]] = []
    texts = reasonings = 0
    for row in rows:
        if row.role == pb.ROLE_TOOL:
            call = calls.get(row.tool_call_id)
            if not is_mcp(row.executor) or call is None:
                items.append(function_output_item(row.tool_call_id, row.content))
            elif row.tool_call_id not in mine:
                failed = row.status == pb.MESSAGE_STATUS_FAILED
                items.append(
                    mcp_call_item(
                        call.id, row.executor, call.function.name, call.function.arguments, row.content, failed
                    )
                )
            continue
        if row.reasoning_content:
            reasonings += 1
            items.append(reasoning_item(reasoning_item_id(reply_id, reasonings), row.reasoning_content))
        if row.content or row.refusal:
            texts += 1
            items.append(message_item(message_item_id(reply_id, texts), _status(row), row.content, row.refusal))
        for c in row.tool_calls:
            if not is_mcp(c.executor):
                items.append(function_call_item(c.id, c.function.name, c.function.arguments))
            elif c.awaiting_approval:
                items.append(mcp_approval_request_item(c.id, c.executor, c.function.name, c.function.arguments))
            else:
                result = results.get(c.id)
                output = result.content if result is not None else None
                failed = result is not None and result.status == pb.MESSAGE_STATUS_FAILED
                items.append(mcp_call_item(c.id, c.executor, c.function.name, c.function.arguments, output, failed))
    return items


def turn_output_items(
    turn: tuple[list[pb.Message], list[pb.Message]], calls: dict[str, pb.ToolCall] | None = None
) -> list[dict[str, Any]]:
    """A turn's output items (:func:`output_items`), after the ``mcp_call``
    items of the approved or denied MCP calls it starts with: those ran on
    the server as the turn began, so they are its output, not its input."""
    inputs, outputs = turn
    calls = calls or {}
    items = []
    for row in inputs:
        if row.role == pb.ROLE_TOOL and is_mcp(row.executor) and (call := calls.get(row.tool_call_id)):
            failed = row.status == pb.MESSAGE_STATUS_FAILED
            items.append(
                mcp_call_item(call.id, row.executor, call.function.name, call.function.arguments, row.content, failed)
            )
    return items + output_items(outputs, outputs[0].id, calls)


def input_item(row: pb.Message) -> list[dict[str, Any]]:
    """The input items of one stored input message (an imported assistant
    message gives its text and its function calls; the result of an MCP call
    decided by an approval, that ``mcp_approval_response``)."""
    if row.role == pb.ROLE_TOOL and is_mcp(row.executor):
        approved = row.status != pb.MESSAGE_STATUS_FAILED or not row.content.startswith("denied by the user")
        item = {
            "type": "mcp_approval_response",
            "id": f"mcpra_{call_suffix(row.tool_call_id)}",
            "approval_request_id": f"mcpr_{call_suffix(row.tool_call_id)}",
            "approve": approved,
            "reason": None if approved else row.content.removeprefix("denied by the user").lstrip(": ") or None,
        }
        return [item]
    if row.role == pb.ROLE_TOOL:
        return [function_output_item(row.tool_call_id, row.content)]
    if row.role == pb.ROLE_ASSISTANT:
        items = [message_item(input_item_id(row), "completed", row.content)] if row.content else []
        return items + [function_call_item(c.id, c.function.name, c.function.arguments) for c in row.tool_calls]
    content: list[dict[str, Any]] = []
    for part in row.content_parts:
        if part.type == "image_url":
            content.append({"type": "input_image", "image_url": part.image_url, "detail": part.detail or "auto"})
        elif part.type == "file":
            content.append({"type": "input_file", "filename": part.file.filename})
        else:
            content.append({"type": "input_text", "text": part.text})
    if not row.content_parts:
        content.append({"type": "input_text", "text": row.content})
    role = ROLE_NAMES.get(row.role, "user")
    return [{"type": "message", "id": input_item_id(row), "status": "completed", "role": role, "content": content}]


def is_instructions(row: pb.Message) -> bool:
    """Whether a stored input message carries a response's ``instructions``."""
    return row.role == pb.ROLE_SYSTEM and row.name == INSTRUCTIONS_NAME and row.step == 0


# --------------------------------------------------------------------------- #
# Turns and responses
# --------------------------------------------------------------------------- #


def _deleted(row: pb.Message) -> bool:
    return row.HasField("delete_time")


def turns(messages: list[pb.Message]) -> list[tuple[list[pb.Message], list[pb.Message]]]:
    """A session's messages (deleted ones included) split into turns:
    (inputs, outputs), where the inputs are the step-0 messages and the
    outputs the messages of steps 1 and on that follow them; the first
    output's id is the turn's id (TurnStarted's ``message_id``), the last
    output is the turn's reply. A turn that waits (REQUIRES_ACTION) ends
    there: what SubmitToolOutputs adds is the next turn. Deleted messages are left out, except a
    turn's ``instructions`` (hidden from later prompts once the turn ends,
    see gateway/openai/responses.py); a turn whose outputs are all deleted
    (a deleted or unstored response) is left out whole."""
    grouped: list[tuple[list[pb.Message], list[pb.Message]]] = []
    for message in messages:
        if message.step == 0:
            if not grouped or grouped[-1][1]:
                grouped.append(([], []))
            grouped[-1][0].append(message)
        elif grouped and not (grouped[-1][1] and grouped[-1][1][-1].status == pb.MESSAGE_STATUS_REQUIRES_ACTION):
            grouped[-1][1].append(message)
        else:  # the first turn, or a turn continued by SubmitToolOutputs (approvals): no inputs
            grouped.append(([], [message]))
    result = []
    for inputs, outputs in grouped:
        if not outputs or all(_deleted(r) for r in outputs):
            continue
        kept_inputs = [r for r in inputs if not _deleted(r) or is_instructions(r)]
        kept_outputs = [r for r in outputs if not _deleted(r)]
        if _deleted(outputs[0]):
            kept_outputs.insert(0, outputs[0])  # the turn keeps its id
        result.append((kept_inputs, kept_outputs))
    return result


def _tool_choice(options: pb.TurnOptions) -> Any:
    if options.tool_choice.function_name:
        return {"type": "function", "name": options.tool_choice.function_name}
    names = {v: k for k, v in chat_convert.TOOL_CHOICE_MODES.items()}
    return names.get(options.tool_choice.mode, "auto")


def _text_format(options: pb.TurnOptions) -> dict[str, Any]:
    kind = options.response_format.type
    if kind == pb.RESPONSE_FORMAT_TYPE_JSON_OBJECT:
        return {"type": "json_object"}
    if kind == pb.RESPONSE_FORMAT_TYPE_JSON_SCHEMA:
        spec = options.response_format.json_schema
        return {
            "type": "json_schema",
            "name": spec.name,
            "description": spec.description or None,
            "schema": json_format.MessageToDict(spec.schema),
            "strict": bool(spec.strict),
        }
    return {"type": "text"}


def _tools(options: pb.TurnOptions) -> list[dict[str, Any]]:
    return [
        {
            "type": "function",
            "name": t.function.name,
            "description": t.function.description or None,
            "parameters": json_format.MessageToDict(t.function.parameters)
            if t.function.HasField("parameters")
            else None,
            "strict": t.function.strict if t.function.HasField("strict") else None,
        }
        for t in options.tools
    ]


def usage(reply: pb.Message) -> dict[str, Any]:
    """The usage of a turn, as its reply reports it (the whole run's)."""
    return {
        "input_tokens": reply.usage.prompt_tokens,
        "output_tokens": reply.usage.completion_tokens,
        "total_tokens": reply.usage.prompt_tokens + reply.usage.completion_tokens,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens_details": {"reasoning_tokens": reply.usage.reasoning_tokens},
    }


def status(reply: pb.Message) -> str:
    """A reply's status as a response's."""
    if reply.status == pb.MESSAGE_STATUS_IN_PROGRESS:
        return "in_progress"
    if reply.status == pb.MESSAGE_STATUS_FAILED:
        return "failed"
    if reply.status == pb.MESSAGE_STATUS_CANCELLED:
        return "cancelled"
    if reply.finish_reason in ("length", "content_filter"):
        return "incomplete"
    return "completed"


def error(reply: pb.Message) -> dict[str, Any] | None:
    """A failed reply's ``error``: OpenAI's code for its reason, and its message."""
    if reply.status != pb.MESSAGE_STATUS_FAILED:
        return None
    body = from_status(reply.error).body["error"] if reply.error.code else {}
    return {"code": body.get("code") or "server_error", "message": body.get("message") or "the turn failed"}


def response(
    session_id: str,
    reply: pb.Message,
    output: list[dict[str, Any]],
    usage_block: dict[str, Any] | None,
    *,
    requested_model: str = "",
    created_at: int = 0,
    previous_response_id: str | None = None,
    instructions: str | None = None,
    store: bool = True,
    background: bool = False,
    turn_id: str = "",
) -> dict[str, Any]:
    """A ``response`` object with every field of the Open Responses
    ``ResponseResource`` present and typed (no null where a number or an enum
    is due): unset sampling settings show OpenAI's defaults. ``reply`` is
    the turn's last message; ``turn_id`` (default: the reply's id) its first,
    the id the turn is known by (TurnStarted, StreamTurn, CancelTurn)."""
    options = reply.options
    state = status(reply)
    reason = {"length": "max_output_tokens", "content_filter": "content_filter"}.get(reply.finish_reason)
    terminal = state != "in_progress"
    return {
        "id": response_id(session_id, turn_id or reply.id),
        "object": "response",
        "created_at": created_at or reply.create_time.seconds or int(time.time()),
        "completed_at": (reply.update_time.seconds or int(time.time())) if terminal else None,
        "status": state,
        "incomplete_details": {"reason": reason} if state == "incomplete" and reason else None,
        "model": reply.model or requested_model,
        "previous_response_id": previous_response_id,
        "instructions": instructions,
        "output": output,
        "error": error(reply),
        "tools": _tools(options),
        "tool_choice": _tool_choice(options),
        "truncation": "auto",
        "parallel_tool_calls": options.parallel_tool_calls if options.HasField("parallel_tool_calls") else True,
        "text": {"format": _text_format(options)},
        "top_p": options.top_p if options.HasField("top_p") else 1.0,
        "presence_penalty": options.presence_penalty if options.HasField("presence_penalty") else 0.0,
        "frequency_penalty": options.frequency_penalty if options.HasField("frequency_penalty") else 0.0,
        "top_logprobs": options.top_logprobs if options.HasField("top_logprobs") else 0,
        "temperature": options.temperature if options.HasField("temperature") else 1.0,
        "reasoning": {"effort": options.reasoning_effort or None, "summary": None},
        "usage": usage_block,
        "max_output_tokens": options.max_completion_tokens if options.HasField("max_completion_tokens") else None,
        "max_tool_calls": None,
        "store": store,
        "background": background,
        "service_tier": options.service_tier or "default",
        "metadata": dict(options.metadata),
        "safety_identifier": options.user or None,
        "prompt_cache_key": None,
    }


def stored_response(
    session_id: str,
    turn: tuple[list[pb.Message], list[pb.Message]],
    previous: str | None,
    calls: dict[str, pb.ToolCall] | None = None,
) -> dict[str, Any]:
    """The response object of a stored turn (inputs, outputs); ``calls``: the
    tool calls of earlier turns (see :func:`output_items`)."""
    inputs, outputs = turn
    reply = outputs[-1]
    instructions = next((m.content for m in inputs if is_instructions(m)), None)
    created = outputs[0].create_time.seconds  # the turn's start, as TurnStarted gives it
    return response(
        session_id,
        reply,
        turn_output_items(turn, calls),
        usage(reply),
        created_at=created,
        previous_response_id=previous,
        instructions=instructions,
        turn_id=outputs[0].id,
    )
