"""Assembles a streamed reply: content, refusal, log probabilities and tool
calls from their fragments."""

from __future__ import annotations

from typing import Any

from server.llm.types import ChatChunk


class ReplyBuilder:
    """Accumulates a reply's chunks; tool-call fragments join by index."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.refusal_parts: list[str] = []
        self.logprobs: list[dict[str, Any]] = []
        self.calls: dict[int, dict[str, Any]] = {}

    def add(self, chunk: ChatChunk) -> None:
        """Adds one chunk's content, refusal, log probabilities and tool-call fragments."""
        if chunk.content:
            self.parts.append(chunk.content)
        if chunk.refusal:
            self.refusal_parts.append(chunk.refusal)
        if chunk.logprobs:
            self.logprobs.extend(chunk.logprobs)
        for fragment in chunk.tool_calls:
            call = self.calls.setdefault(
                fragment.index, {"id": "", "type": "function", "function": {"name": "", "arguments": ""}}
            )
            call["id"] = call["id"] or fragment.id
            call["function"]["name"] += fragment.name
            call["function"]["arguments"] += fragment.arguments

    @property
    def content(self) -> str:
        """The reply's text so far."""
        return "".join(self.parts)

    @property
    def refusal(self) -> str | None:
        """The refusal text, or None when the model did not refuse."""
        return "".join(self.refusal_parts) or None

    @property
    def tool_calls(self) -> list[dict[str, Any]]:
        """The tool calls in OpenAI's shape, by index."""
        return [self.calls[index] for index in sorted(self.calls)]
