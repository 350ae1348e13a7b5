"""Per-turn options: the OpenAI chat-completions parameters a caller sets for
one turn, checked once and forwarded upstream as they are.

``params`` holds them in OpenAI's wire shape (``response_format``,
``tool_choice``, ``stop``, ``seed``, ...), so the LLM adapter forwards them
without translation and the stored reply shows exactly what the model was
asked to obey. The settings a session also has (model, tools, temperature,
max output tokens) merge over the session's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from server.domain.errors import Violations

# OpenAI's documented ranges (API reference, chat completions).
_RANGES: dict[str, tuple[float, float]] = {
    "top_p": (0.0, 1.0),
    "frequency_penalty": (-2.0, 2.0),
    "presence_penalty": (-2.0, 2.0),
    "top_logprobs": (0, 20),
}
_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
MAX_STOP_SEQUENCES = 4
MAX_METADATA_PAIRS = 16
MAX_METADATA_KEY_CHARS = 64
MAX_METADATA_VALUE_CHARS = 512
MAX_LOGIT_BIAS_ENTRIES = 1024
# Request fields extra_body may not replace: the turn owns them.
RESERVED_FIELDS = frozenset({"model", "messages", "stream", "stream_options", "tools", "n"})


@dataclass(frozen=True)
class TurnOptions:
    """One turn's options.

    Attributes:
        temperature: 0 to 2, or None for the session's.
        max_output_tokens: sent as ``max_tokens``; None for the session's.
        model: replaces the session's model for this turn ('' keeps it).
        tools: OpenAI function tools replacing the session's, or None.
        params: further OpenAI request fields in wire shape (``response_format``,
            ``tool_choice``, ``parallel_tool_calls``, ``stop`` (a list), ``seed``,
            ``top_p``, ``frequency_penalty``, ``presence_penalty``, ``logit_bias``,
            ``logprobs``, ``top_logprobs``, ``n``, ``user``, ``metadata``,
            ``reasoning_effort``, ``max_completion_tokens``, ``service_tier``,
            ``modalities``).
        extra_body: unknown request fields, sent upstream unchanged.
        routing_mode: how the turn is answered (server/domain/runs/routing.py).
    """

    temperature: float | None = None
    max_output_tokens: int | None = None
    model: str = ""
    tools: list[dict[str, Any]] | None = None
    params: dict[str, Any] = field(default_factory=dict)
    extra_body: dict[str, Any] = field(default_factory=dict)
    # passthrough, reasoning, auto or orchestration; '' takes the agent's default.
    routing_mode: str = ""

    def stored(self) -> dict[str, Any] | None:
        """The options as stored on the reply, in OpenAI's request shape; None when nothing was set."""
        record: dict[str, Any] = {}
        if self.model:
            record["model"] = self.model
        if self.temperature is not None:
            record["temperature"] = self.temperature
        if self.max_output_tokens is not None:
            record["max_tokens"] = self.max_output_tokens
        if self.tools is not None:
            record["tools"] = self.tools
        record.update(self.params)
        if self.extra_body:
            record["extra_body"] = self.extra_body
        if self.routing_mode:
            record["routing_mode"] = self.routing_mode
        return record or None

    @property
    def output_reserve(self) -> int | None:
        """The most tokens the reply may take, when the turn bounds it."""
        return self.max_output_tokens or self.params.get("max_completion_tokens")


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def validate_options(options: TurnOptions, path: str, violations: Violations) -> None:
    """Records a violation (field ``<path>.<name>``) for each parameter out of
    OpenAI's documented range, ``n`` other than 1 (a turn stores one reply),
    ``top_logprobs`` without ``logprobs``, an unknown ``tool_choice`` mode, a
    JSON schema format without name or schema, more than 4 stop sequences,
    oversized metadata or logit bias, and extra fields that would replace a
    field the turn owns. (Temperature, max output tokens and tool names are
    the session settings' checks.)"""
    params = options.params
    value = params.get("max_completion_tokens")
    if value is not None and value < 1:
        violations.add(f"{path}.max_completion_tokens", "must be at least 1")
    for name, (low, high) in _RANGES.items():
        value = params.get(name)
        if value is not None and not (_number(value) and low <= value <= high):
            violations.add(f"{path}.{name}", f"must be between {low:g} and {high:g}")
    if params.get("n", 1) != 1:
        violations.add(f"{path}.n", "only 1 is supported: a turn stores one reply")
    if params.get("top_logprobs") and not params.get("logprobs"):
        violations.add(f"{path}.top_logprobs", "requires logprobs to be true")
    if len(params.get("stop") or ()) > MAX_STOP_SEQUENCES:
        violations.add(f"{path}.stop", f"at most {MAX_STOP_SEQUENCES} sequences")
    choice = params.get("tool_choice")
    if isinstance(choice, str) and choice not in ("none", "auto", "required"):
        violations.add(f"{path}.tool_choice", "must be none, auto, required or a function")
    _check_response_format(params.get("response_format"), path, violations)
    metadata = params.get("metadata") or {}
    if len(metadata) > MAX_METADATA_PAIRS:
        violations.add(f"{path}.metadata", f"at most {MAX_METADATA_PAIRS} key-value pairs")
    for key, value in metadata.items():
        if len(key) > MAX_METADATA_KEY_CHARS or len(str(value)) > MAX_METADATA_VALUE_CHARS:
            violations.add(
                f"{path}.metadata",
                f"keys take at most {MAX_METADATA_KEY_CHARS} characters, values {MAX_METADATA_VALUE_CHARS}",
            )
            break
    bias = params.get("logit_bias") or {}
    if len(bias) > MAX_LOGIT_BIAS_ENTRIES:
        violations.add(f"{path}.logit_bias", f"at most {MAX_LOGIT_BIAS_ENTRIES} entries")
    if any(not (_number(v) and -100 <= v <= 100) for v in bias.values()):
        violations.add(f"{path}.logit_bias", "biases must be between -100 and 100")
    for name in sorted(RESERVED_FIELDS.intersection(options.extra_body)):
        violations.add(f"{path}.extra_body.{name}", "is set by the turn itself and cannot be passed through")


def check_tool_choice(options: TurnOptions, tool_names: set[str], path: str) -> None:
    """Raises INVALID_ARGUMENT (FIELD_VIOLATION on ``<path>.tool_choice``) when
    the choice names a tool the turn does not offer, or requires a tool of a
    turn that offers none."""
    choice = options.params.get("tool_choice")
    violations = Violations()
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name", "")
        if name not in tool_names:
            known = ", ".join(sorted(tool_names)) or "none"
            violations.add(f"{path}.tool_choice", f"names tool {name!r}, which this turn does not offer ({known})")
    elif choice == "required" and not tool_names:
        violations.add(f"{path}.tool_choice", "is 'required' but this turn offers no tools")
    violations.raise_if_any()


def _check_response_format(value: Any, path: str, violations: Violations) -> None:
    if not isinstance(value, dict) or value.get("type") != "json_schema":
        return
    schema = value.get("json_schema") or {}
    if not _NAME.match(str(schema.get("name", ""))):
        violations.add(f"{path}.response_format.json_schema.name", "must be 1 to 64 of a-z, A-Z, 0-9, '_' or '-'")
    if not isinstance(schema.get("schema"), dict):
        violations.add(f"{path}.response_format.json_schema.schema", "is required: the JSON Schema of the reply")
