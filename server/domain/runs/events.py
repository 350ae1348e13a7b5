"""What a running turn yields to its caller."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from server.domain.errors import AgentAPIError
from server.llm.types import ToolCallFragment
from server.store.models import MessageRow


@dataclass
class Delta:
    """A numbered fragment of the reply."""

    sequence_number: int
    content: str
    tool_calls: Sequence[ToolCallFragment]
    logprobs: Sequence[dict[str, Any]] = field(default_factory=tuple)
    refusal: str = ""
    reasoning: str = ""


@dataclass
class TurnEvent:
    """``kind`` is ``started`` (the first event: ``message`` is the reply, its
    id and model set, not yet stored as final), ``input`` (a stored input
    message), ``delta``, ``tool_started`` (``message`` the IN_PROGRESS tool
    message, ``call`` the model's call), ``tool_completed`` (the stored tool
    message) or ``final`` (the stored assistant message, with ``error`` set
    when the turn failed). A ``delta``'s ``message`` is the step's reply it
    belongs to."""

    kind: str
    message: MessageRow | None = None
    delta: Delta | None = None
    error: AgentAPIError | None = None
    call: dict[str, Any] | None = None
    replay: bool = False  # ``started`` of an idempotent replay: the turn ran before, its log exists
