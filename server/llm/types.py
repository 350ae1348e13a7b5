"""Shapes shared by every chat backend: the request sent and the chunks streamed back."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class ChatRequest:
    """An OpenAI chat-completions request.

    ``messages`` and ``tools`` are already in OpenAI's wire shape (dicts).
    """

    model: str
    messages: list[dict[str, Any]]
    temperature: float | None = None
    max_tokens: int | None = None
    tools: list[dict[str, Any]] = field(default_factory=list)
    # Further chat-completions fields, forwarded as they are (response_format,
    # tool_choice, stop, seed, logprobs, max_completion_tokens, ...).
    params: dict[str, Any] = field(default_factory=dict)
    # Unknown fields the caller passed through; the fields above win.
    extra_body: dict[str, Any] = field(default_factory=dict)

    def body(self, stream: bool) -> dict[str, Any]:
        """The JSON body for ``POST /chat/completions``."""
        body: dict[str, Any] = {**self.extra_body, **self.params}
        body.update(model=self.model, messages=self.messages, stream=stream)
        if stream:
            body["stream_options"] = {"include_usage": True}
        if self.temperature is not None:
            body["temperature"] = self.temperature
        if self.max_tokens is not None:
            body["max_tokens"] = self.max_tokens
        if self.tools:
            body["tools"] = self.tools
        return body


@dataclass(frozen=True)
class ToolCallFragment:
    """A streamed piece of a tool call; pieces with the same ``index`` concatenate."""

    index: int
    id: str = ""
    name: str = ""
    arguments: str = ""


@dataclass(frozen=True)
class TokenUsage:
    """Token counts reported by the upstream for one completion."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float | None = None
    reasoning_tokens: int = 0


@dataclass(frozen=True)
class ChatChunk:
    """One streamed event: any of content, tool-call fragments, finish reason, usage."""

    content: str = ""
    tool_calls: tuple[ToolCallFragment, ...] = ()
    finish_reason: str = ""
    usage: TokenUsage | None = None
    model: str = ""
    # OpenAI ``logprobs.content`` entries for this chunk's tokens.
    logprobs: tuple[dict[str, Any], ...] = ()
    refusal: str = ""
    # The model's reasoning text (``reasoning_content``), and LiteLLM's
    # ``thinking_blocks`` (Anthropic's signed thinking) for this chunk.
    reasoning: str = ""
    thinking_blocks: tuple[dict[str, Any], ...] = ()

    @property
    def has_output(self) -> bool:
        """Whether the chunk carries any part of the reply (a delta to relay)."""
        return bool(self.content or self.tool_calls or self.refusal or self.reasoning or self.thinking_blocks)


@dataclass(frozen=True)
class ModelInfo:
    """A model of the upstream catalog."""

    id: str
    owned_by: str = ""
    context_window: int = 0
    input_cost_per_token: float = 0.0
    output_cost_per_token: float = 0.0

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        """US dollars for a completion at the catalog's prices."""
        return prompt_tokens * self.input_cost_per_token + completion_tokens * self.output_cost_per_token


class ChatStream(Protocol):
    """An open completion stream: iterate it for chunks; ``request_id`` is the
    upstream's, ``cost_usd`` the cost header's value when the upstream sent one."""

    request_id: str
    cost_usd: float | None

    def __aiter__(self) -> AsyncIterator[ChatChunk]: ...


class ChatBackend(Protocol):
    """What the turn lifecycle needs from an upstream: streamed completions and a catalog."""

    def check(self, model: str, params: dict[str, Any]) -> None:
        """Raises INVALID_ARGUMENT (UNSUPPORTED_PARAMETER, with a field
        violation on ``options.<name>``) for a request field ``model`` cannot
        honour; called before the turn stores anything."""

    def stream(self, request: ChatRequest) -> Any:
        """An async context manager yielding a :class:`ChatStream`; raises
        :class:`~server.domain.errors.AgentAPIError` for upstream failures."""

    async def list_models(self) -> list[ModelInfo]:
        """The upstream's models."""

    async def aclose(self) -> None:
        """Releases connections."""
