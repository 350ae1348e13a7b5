"""The messages of a turn: what a caller sends, how it is checked, and how a
stored message goes back upstream."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from server.domain import limits
from server.domain.common import new_id
from server.domain.errors import Violations
from server.domain.money import ZERO
from server.domain.runs.options import TurnOptions, validate_options
from server.domain.sessions import Settings, validate_settings
from server.store.models import MessageRow

INPUT_ROLES = ("user", "tool", "system", "developer", "assistant")
# Replies that never finished are kept in the ledger but not sent back upstream.
_PROMPT_EXCLUDED_STATUSES = ("failed", "in_progress")


@dataclass
class InputMessage:
    """A caller's message; ``role`` is one of user, tool, system, assistant."""

    role: str
    content: str = ""
    tool_call_id: str = ""
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    name: str = ""
    # OpenAI content parts ({"type": "text", "text"} or {"type": "image_url", "image_url": {"url"}}).
    content_parts: list[dict[str, Any]] = field(default_factory=list)

    @property
    def text(self) -> str:
        """``content``, or the text parts joined when the content came as parts."""
        if not self.content_parts:
            return self.content
        return "".join(part.get("text", "") for part in self.content_parts if part.get("type") == "text")


def validate_inputs(
    inputs: Sequence[InputMessage], options: TurnOptions, path: str = "messages", allow_empty: bool = False
) -> None:
    """Raises INVALID_ARGUMENT (FIELD_VIOLATION) for no messages, a bad role, an
    empty user message, a tool message without ``tool_call_id``, a content
    part of an unknown type or without its payload, a last message that is
    not from the user or a tool, or out-of-range options; (LIMIT_EXCEEDED)
    for more than ``AGENTAPI_MAX_MESSAGES_PER_REQUEST`` messages (2048), or a
    message whose text or a tool call's arguments exceed
    ``AGENTAPI_MAX_MESSAGE_CHARS`` characters (1,048,576), or the turn's tools
    over their limits. The sizes are checked first, so an oversized request
    costs no more than counting."""
    violations = Violations()
    if len(inputs) > limits.active().messages_per_request:
        limits.exceeded(violations, path, "messages_per_request", f"{len(inputs):,}")
        limits.raise_if_any(violations)
    for index, message in enumerate(inputs):
        limits.check_chars(message.text, f"{path}[{index}].content", violations)
        for call_index, call in enumerate(message.tool_calls):
            arguments = str((call.get("function") or {}).get("arguments", ""))
            limits.check_chars(arguments, f"{path}[{index}].tool_calls[{call_index}].function.arguments", violations)
    limits.raise_if_any(violations)
    if not inputs and not allow_empty:
        violations.add(path, "must contain at least one message")
    for index, message in enumerate(inputs):
        field_path = f"{path}[{index}]"
        if message.role not in INPUT_ROLES:
            violations.add(f"{field_path}.role", "must be user, tool, system, developer or assistant")
        elif message.role in ("user", "system", "developer") and not message.text.strip() and not message.content_parts:
            violations.add(f"{field_path}.content", "must not be empty")
        elif message.role == "tool" and not message.tool_call_id:
            violations.add(f"{field_path}.tool_call_id", "is required for a tool message")
        for part_index, part in enumerate(message.content_parts):
            _check_part(part, f"{field_path}.content_parts[{part_index}]", violations)
    if inputs and inputs[-1].role not in ("user", "tool"):
        violations.add(f"{path}[{len(inputs) - 1}].role", "the last message must be from the user or a tool")
    settings = Settings(temperature=options.temperature, max_output_tokens=options.max_output_tokens)
    validate_settings(replace(settings, tools=options.tools or []), "options", violations)
    validate_options(options, "options", violations)
    limits.raise_if_any(violations)


def _check_part(part: dict[str, Any], path: str, violations: Violations) -> None:
    kind = part.get("type")
    if kind == "image_url":
        url = str((part.get("image_url") or {}).get("url", ""))
        if not url.startswith(("https://", "http://", "data:")):
            violations.add(f"{path}.image_url", "must be an http(s) or data: URL")
    elif kind == "input_audio":
        audio = part.get("input_audio") or {}
        if not audio.get("data") or not audio.get("format"):
            violations.add(f"{path}.input_audio", "needs data (base64) and format")
    elif kind == "file":
        file = part.get("file") or {}
        if not file.get("file_id") and not file.get("file_data"):
            violations.add(f"{path}.file", "needs a file_id or file_data")
    elif kind != "text":
        violations.add(f"{path}.type", "must be text, image_url, input_audio or file")


def in_prompt(row: MessageRow) -> bool:
    """Whether a stored message goes back upstream: all but replies that
    failed or never finished, messages a regeneration superseded, and
    messages DeleteMessage deleted."""
    if getattr(row, "superseded_by", None):
        return False
    if getattr(row, "delete_time", None) is not None:
        return False
    return not (row.role == "assistant" and row.status in _PROMPT_EXCLUDED_STATUSES)


_CALL_KEYS = ("id", "type", "function")


def to_openai(row: MessageRow) -> dict[str, Any]:
    """A stored message in OpenAI's chat ``messages`` shape."""
    message: dict[str, Any] = {"role": row.role, "content": row.content_parts or row.content}
    if row.tool_calls:
        # Only OpenAI's keys: the stored calls also carry their executor.
        message["tool_calls"] = [{key: call[key] for key in _CALL_KEYS if key in call} for call in row.tool_calls]
        message["content"] = row.content or None
        # Anthropic requires the signed thinking of a tool-calling turn back
        # unchanged (LiteLLM's ``thinking_blocks``); other thinking is left out,
        # which is what a tight history budget drops first.
        blocks = getattr(row, "thinking_blocks", None)
        if blocks:
            message["thinking_blocks"] = blocks
    if row.tool_call_id:
        message["tool_call_id"] = row.tool_call_id
    if row.name:
        message["name"] = row.name
    return message


def new_message(session_id: str, tenant_id: str, sequence: int, role: str, now: Any, **fields: Any) -> MessageRow:
    """A new message row with every column set (defaults: completed, empty, zero usage)."""
    values: dict[str, Any] = {
        "content": "",
        "tool_calls": None,
        "content_parts": None,
        "tool_call_id": "",
        "name": "",
        "model": "",
        "status": "completed",
        "finish_reason": "",
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "time_to_first_token_ms": 0,
        "duration_ms": 0,
        "upstream_request_id": "",
        "error": None,
        "metadata_": {},
        "cost_usd": ZERO,
        "attempts": None,
        "token_count": 0,
        "prompt_first_sequence": 0,
        "prompt_last_sequence": 0,
        "runner_id": "",
        "options": None,
        "logprobs": None,
        "refusal": None,
        "executor": "",
        "step": 0,
        "reasoning_content": None,
        "thinking_blocks": None,
        "reasoning_tokens": 0,
        "routing": None,
        "superseded_by": None,
        "delete_time": None,
        "expire_time": None,
        "purge_time": None,
    }
    values.update(fields)
    return MessageRow(
        id=new_id(),
        tenant_id=tenant_id,
        session_id=session_id,
        sequence=sequence,
        role=role,
        create_time=now,
        update_time=now,
        **values,
    )
