"""Runs: a turn's lifecycle, split by concern (messages, attempts, the relay,
the terminal write). ``TurnRunner`` is the entry point."""

from server.domain.runs.events import Delta, TurnEvent
from server.domain.runs.messages import InputMessage, in_prompt, new_message, to_openai, validate_inputs
from server.domain.runs.options import TurnOptions
from server.domain.runs.runner import TurnRunner

__all__ = [
    "Delta",
    "InputMessage",
    "TurnEvent",
    "TurnOptions",
    "TurnRunner",
    "in_prompt",
    "new_message",
    "to_openai",
    "validate_inputs",
]
