"""Assembles a streamed reply: content, refusal, log probabilities and tool
calls from their fragments."""

from __future__ import annotations

from typing import Any

from server.llm.types import ChatChunk

_BLOCK_KEYS = ("type", "thinking", "signature", "data")


class ReplyBuilder:
    """Accumulates a reply's chunks; tool-call fragments join by index."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.refusal_parts: list[str] = []
        self.logprobs: list[dict[str, Any]] = []
        self.calls: dict[int, dict[str, Any]] = {}
        self.reasoning_parts: list[str] = []
        self.blocks: list[dict[str, Any]] = []

    def add(self, chunk: ChatChunk) -> None:
        """Adds one chunk's content, refusal, log probabilities and tool-call fragments."""
        if chunk.content:
            self.parts.append(chunk.content)
        if chunk.refusal:
            self.refusal_parts.append(chunk.refusal)
        if chunk.logprobs:
            self.logprobs.extend(chunk.logprobs)
        if chunk.reasoning:
            self.reasoning_parts.append(chunk.reasoning)
        for block in chunk.thinking_blocks:
            self._add_block(block)
        for fragment in chunk.tool_calls:
            call = self.calls.setdefault(
                fragment.index, {"id": "", "type": "function", "function": {"name": "", "arguments": ""}}
            )
            call["id"] = call["id"] or fragment.id
            call["function"]["name"] += fragment.name
            call["function"]["arguments"] += fragment.arguments

    def _add_block(self, block: dict[str, Any]) -> None:
        """Streamed thinking blocks arrive in pieces: text pieces of one block
        join until it is signed; a redacted block stands alone."""
        last = self.blocks[-1] if self.blocks else None
        if (
            block.get("type", "thinking") == "thinking"
            and last
            and last.get("type") == "thinking"
            and not last.get("signature")
        ):
            assert last is not None
            last["thinking"] = last.get("thinking", "") + str(block.get("thinking") or "")
            if block.get("signature"):
                last["signature"] = block["signature"]
            return
        self.blocks.append({key: value for key, value in block.items() if key in _BLOCK_KEYS})

    @property
    def reasoning(self) -> str | None:
        """The reasoning text, or None when the model sent none."""
        return "".join(self.reasoning_parts) or None

    @property
    def thinking_blocks(self) -> list[dict[str, Any]] | None:
        """The signed thinking blocks, or None."""
        return self.blocks or None

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
