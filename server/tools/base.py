"""What a run needs from anything that executes a tool call on the server.

An executor offers :class:`ToolDefinition` s (what the model sees) and runs
calls, answering a :class:`ToolOutcome`. A failure of the tool itself is an
outcome, not an exception: the model receives it as the tool's output and
the run goes on.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Protocol

# ErrorInfo reasons of a failed tool call (stored on the tool message).
TOOL_TIMEOUT = "TOOL_TIMEOUT"
TOOL_UNAVAILABLE = "TOOL_UNAVAILABLE"
TOOL_FAILED = "TOOL_FAILED"
TOOL_DEFINITION_CHANGED = "TOOL_DEFINITION_CHANGED"


@dataclass(frozen=True)
class ToolDefinition:
    """A server-side tool as the model sees it.

    Attributes:
        name: the function name sent to the model, 1 to 64 of
            ``[a-zA-Z0-9_-]``; an MCP tool's is ``<server id>__<tool name>``.
        description: what the tool does, for the model.
        parameters: JSON Schema of the arguments object.
        executor: ``builtin`` or ``mcp:<server id>``.
    """

    name: str
    description: str
    parameters: dict[str, Any] = field(default_factory=lambda: {"type": "object", "properties": {}})
    executor: str = "builtin"

    def openai(self) -> dict[str, Any]:
        """The tool in OpenAI's ``tools`` shape."""
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": self.parameters},
        }


@dataclass(frozen=True)
class ToolOutcome:
    """How a call ended.

    Attributes:
        output: the text the model receives: the tool's output, or for a
            failure a JSON object ``{"error": {"reason", "message"}}``.
        status: ``completed`` or ``failed``.
        error_reason: for a failure, one of TOOL_TIMEOUT, TOOL_UNAVAILABLE,
            TOOL_FAILED, TOOL_DEFINITION_CHANGED.
        error_message: for a failure, a message safe to show (no secrets).
    """

    output: str
    status: str = "completed"
    error_reason: str = ""
    error_message: str = ""

    @classmethod
    def failed(cls, reason: str, message: str) -> ToolOutcome:
        """A failure, with the structured error the model receives as output."""
        output = json.dumps({"error": {"reason": reason, "message": message}})
        return cls(output=output, status="failed", error_reason=reason, error_message=message)


class ToolFailure(Exception):
    """Raised by a tool (built-in or MCP adapter) for a failure the model should see.

    Attributes:
        reason: TOOL_FAILED, TOOL_UNAVAILABLE, TOOL_TIMEOUT or TOOL_DEFINITION_CHANGED.
        message: safe to show to the model and the caller (no secrets).
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class ToolExecutor(Protocol):
    """Runs the calls of one executor (the built-in registry, one MCP server)."""

    async def call(self, name: str, arguments: dict[str, Any]) -> str:
        """Runs tool ``name`` (its name as the executor knows it, without any
        prefix) and returns its output text. Raises :class:`ToolFailure`;
        the caller bounds the time and the output size."""
