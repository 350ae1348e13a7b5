"""The ids of the Responses and Conversations surfaces, and how they map to
stored rows: ``resp_<session><turn>`` (both UUIDs as hex, so a response is
found without a lookup table), ``msg_``/``rs_`` + the turn's hex and an
ordinal, ``fc_``/``fco_``/``mcp_``/``mcpr_`` + the tool call's id, ``msg_`` +
an input message's hex, ``conv_`` + the conversation's UUID as hex."""

from __future__ import annotations

import uuid

from agentapi import v1 as pb
from gateway.errors import ApiError, openai_error


def response_id(session_id: str, message_id: str) -> str:
    """``resp_`` + the session's and the reply's UUIDs as hex."""
    return f"resp_{uuid.UUID(session_id).hex}{uuid.UUID(message_id).hex}"


def not_found(kind: str, value: str, code: str | None = None) -> ApiError:
    """OpenAI's 404 for an unknown id."""
    body = openai_error(404, f"No {kind} found with id '{value}'.", "NOT_FOUND")
    body["error"]["code"] = code or "not_found"
    return ApiError(404, body)


def parse_response_id(value: str, code: str | None = None) -> tuple[str, str]:
    """(session id, reply id) of a ``resp_`` id. Raises a 404 :class:`ApiError`
    for a malformed one (``code`` names it, e.g. ``previous_response_not_found``)."""
    body = value.removeprefix("resp_")
    try:
        if not value.startswith("resp_") or len(body) != 64:
            raise ValueError(value)
        return str(uuid.UUID(body[:32])), str(uuid.UUID(body[32:]))
    except ValueError:
        raise not_found("response", value, code) from None


def conversation_id(value: str) -> str:
    """``conv_`` + the conversation's UUID as hex."""
    return f"conv_{uuid.UUID(value).hex}"


def parse_conversation_id(value: str) -> str:
    """The UUID of a ``conv_`` id. Raises a 404 :class:`ApiError`."""
    try:
        if not value.startswith("conv_"):
            raise ValueError(value)
        return str(uuid.UUID(value.removeprefix("conv_")))
    except ValueError:
        raise not_found("conversation", value) from None


def hex_of(message_id: str) -> str:
    return uuid.UUID(message_id).hex


def call_suffix(call_id: str) -> str:
    return call_id.removeprefix("call_")


def message_item_id(reply_id: str, ordinal: int) -> str:
    """The id of a turn's ``ordinal``-th text (from 1; one per assistant message at most)."""
    return f"msg_{hex_of(reply_id)}_{ordinal}"


def reasoning_item_id(reply_id: str, ordinal: int) -> str:
    """The id of a turn's ``ordinal``-th reasoning (from 1)."""
    return f"rs_{hex_of(reply_id)}_{ordinal}"


def function_call_item_id(call_id: str) -> str:
    """The id of a function call item, from its call id (unique in a session)."""
    return f"fc_{call_suffix(call_id)}"


def function_output_item_id(call_id: str) -> str:
    """The id of the output of a function call."""
    return f"fco_{call_suffix(call_id)}"


def input_item_id(message: pb.Message) -> str:
    """The id of an input message (a tool output is named after its call)."""
    if message.role == pb.ROLE_TOOL:
        return function_output_item_id(message.tool_call_id)
    return f"msg_{hex_of(message.id)}"
