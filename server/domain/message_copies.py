"""Copies of stored messages into another session (carried-forward history,
forks): the same words, calls and reasoning, no usage or cost, since the
original turns were billed once, and the original named in ``metadata``."""

from __future__ import annotations

from typing import Any

from server.store.models import MessageRow, SessionRow


def copy_message(message: Any, target: SessionRow, sequence: int, now: Any, why: str, **changes: Any) -> MessageRow:
    """A copy of ``message`` as message ``sequence`` of ``target``;
    ``metadata[why]`` names the original; ``changes`` replace fields."""
    fields: dict[str, Any] = {
        "role": message.role,
        "content": message.content,
        "content_parts": message.content_parts,
        "tool_calls": message.tool_calls,
        "tool_call_id": message.tool_call_id,
        "name": message.name,
        "model": message.model,
        "status": message.status,
        "finish_reason": message.finish_reason,
        "token_count": message.token_count,
        "executor": message.executor,
        "step": message.step,
        "reasoning_content": message.reasoning_content,
        "thinking_blocks": message.thinking_blocks,
        "metadata_": {why: {"session_id": message.session_id, "message_id": message.id}},
    }
    fields.update(changes)
    # Imported here: the run's module imports sessions, which carries history with this one.
    from server.domain.runs.messages import new_message  # noqa: PLC0415

    role = fields.pop("role")
    return new_message(target.id, target.tenant_id, sequence, role, now, **fields)
