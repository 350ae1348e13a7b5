"""Assembles a streamed reply: content and tool calls from their fragments."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from server.llm.types import ToolCallFragment


class ReplyBuilder:
    """Accumulates content and assembles tool-call fragments by index."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.calls: dict[int, dict[str, Any]] = {}

    def add(self, content: str, fragments: Sequence[ToolCallFragment]) -> None:
        if content:
            self.parts.append(content)
        for fragment in fragments:
            call = self.calls.setdefault(
                fragment.index, {"id": "", "type": "function", "function": {"name": "", "arguments": ""}}
            )
            call["id"] = call["id"] or fragment.id
            call["function"]["name"] += fragment.name
            call["function"]["arguments"] += fragment.arguments

    @property
    def content(self) -> str:
        return "".join(self.parts)

    @property
    def tool_calls(self) -> list[dict[str, Any]]:
        return [self.calls[index] for index in sorted(self.calls)]
