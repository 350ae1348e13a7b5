"""The built-in tool registry: Python tools that run inside agentapi.

An agent names the ones it may use (``Agent.builtin_tools``). Three ship
with agentapi: ``calculator``, ``current_time`` and ``echo``. An operator adds
a tool without touching the run: a module listed in ``AGENTAPI_TOOL_MODULES``
exposes ``TOOLS``, a list of :class:`BuiltinTool`.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import math
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import simpleeval

from server.tools.base import TOOL_FAILED, ToolDefinition, ToolFailure

MAX_EXPRESSION_CHARS = 1000
MAX_RESULT_BITS = 4096  # integer results stay small enough to compute in microseconds
_MATH = {name: getattr(math, name) for name in ("sqrt", "sin", "cos", "tan", "log", "log10", "exp", "floor", "ceil")}


@dataclass(frozen=True)
class BuiltinTool:
    """A Python tool.

    Attributes:
        name: 1 to 64 of ``[a-zA-Z0-9_-]``, unique in the registry.
        description: what it does, for the model.
        parameters: JSON Schema of its arguments object.
        function: takes the arguments object, returns the output text (or
            an awaitable of it); raises :class:`ToolFailure` for a failure
            the model should see.
    """

    name: str
    description: str
    function: Callable[[dict[str, Any]], str | Awaitable[str]]
    parameters: dict[str, Any] = field(default_factory=lambda: {"type": "object", "properties": {}})

    @property
    def definition(self) -> ToolDefinition:
        """The tool as the model sees it."""
        return ToolDefinition(self.name, self.description, self.parameters, "builtin")


def _bounded_power(base: Any, exponent: Any) -> Any:
    """``base ** exponent`` when the result has at most MAX_RESULT_BITS bits:
    simpleeval bounds the operands only, and 999999 ** 4000000 then holds
    the event loop (and the GIL) for half a minute."""
    if isinstance(base, int) and isinstance(exponent, int) and exponent > 0 and abs(base) > 1:
        if exponent * abs(base).bit_length() > MAX_RESULT_BITS:
            raise ToolFailure(TOOL_FAILED, f"{base} ** {exponent} is too large to compute")
    return simpleeval.safe_power(base, exponent)


def _calculate(arguments: dict[str, Any]) -> str:
    expression = str(arguments.get("expression", ""))
    if not expression.strip() or len(expression) > MAX_EXPRESSION_CHARS:
        raise ToolFailure(TOOL_FAILED, f"expression must be 1 to {MAX_EXPRESSION_CHARS} characters")
    functions = {
        name: getattr(math, name) for name in ("sqrt", "sin", "cos", "tan", "log", "log10", "exp", "floor", "ceil")
    }
    operators = {**simpleeval.DEFAULT_OPERATORS, ast.Pow: _bounded_power}
    evaluator = simpleeval.SimpleEval(
        operators=operators, functions={**functions, "abs": abs, "round": round, "min": min, "max": max}
    )
    evaluator.names = {"pi": math.pi, "e": math.e}
    try:
        value = evaluator.eval(expression)
    except (simpleeval.InvalidExpression, ArithmeticError, SyntaxError, TypeError, ValueError) as exc:
        raise ToolFailure(TOOL_FAILED, f"cannot evaluate {expression!r}: {exc}") from exc
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise ToolFailure(TOOL_FAILED, f"{expression!r} is not arithmetic")
    return str(int(value)) if isinstance(value, float) and value.is_integer() and abs(value) < 2**53 else str(value)


def _current_time(arguments: dict[str, Any]) -> str:
    zone = str(arguments.get("timezone") or "UTC")
    try:
        return datetime.now(UTC).astimezone(ZoneInfo(zone)).isoformat(timespec="seconds")
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ToolFailure(TOOL_FAILED, f"unknown IANA time zone {zone!r}") from exc


def _echo(arguments: dict[str, Any]) -> str:
    return str(arguments.get("text", ""))


DEFAULT_TOOLS = (
    BuiltinTool(
        "calculator",
        "Evaluates an arithmetic expression (+ - * / // % **, parentheses, sqrt, sin, cos, tan, log, exp, "
        "floor, ceil, abs, round, min, max, pi, e) and returns the number.",
        _calculate,
        {
            "type": "object",
            "properties": {"expression": {"type": "string", "description": "for example (2 + 3) * 4"}},
            "required": ["expression"],
        },
    ),
    BuiltinTool(
        "current_time",
        "The current date and time in an IANA time zone, as ISO 8601.",
        _current_time,
        {
            "type": "object",
            "properties": {"timezone": {"type": "string", "description": "for example Europe/Paris; default UTC"}},
        },
    ),
    BuiltinTool(
        "echo",
        "Returns the text it is given.",
        _echo,
        {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]},
    ),
)


class BuiltinRegistry:
    """The built-in tools by name; an executor (server/tools/base.py) for them."""

    def __init__(self, tools: Iterable[BuiltinTool] = DEFAULT_TOOLS) -> None:
        self._tools: dict[str, BuiltinTool] = {}
        for tool in tools:
            self.register(tool)

    def register(self, tool: BuiltinTool) -> None:
        """Adds a tool; raises ValueError for a name already taken."""
        if tool.name in self._tools:
            raise ValueError(f"built-in tool {tool.name!r} is already registered")
        self._tools[tool.name] = tool

    def names(self) -> list[str]:
        """The registered tools' names, sorted."""
        return sorted(self._tools)

    def definition(self, name: str) -> ToolDefinition | None:
        """A tool's definition, or None when no such tool is registered."""
        tool = self._tools.get(name)
        return tool.definition if tool else None

    async def call(self, name: str, arguments: dict[str, Any]) -> str:
        """Runs a tool. Raises ToolFailure (TOOL_FAILED) for an unknown tool or the tool's own failure."""
        tool = self._tools.get(name)
        if tool is None:
            raise ToolFailure(TOOL_FAILED, f"no built-in tool {name!r}")
        result = tool.function(arguments)
        return await result if inspect.isawaitable(result) else result


def load_registry(modules: Iterable[str]) -> BuiltinRegistry:
    """The default tools plus each module's ``TOOLS``. Raises ImportError or
    ValueError (a duplicate name) at start-up, not at a call."""
    registry = BuiltinRegistry()
    for module_name in modules:
        for tool in importlib.import_module(module_name).TOOLS:
            registry.register(tool)
    return registry
