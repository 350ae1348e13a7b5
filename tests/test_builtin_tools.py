"""The built-in tool registry and the bounds every server-side call runs in."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from server.tools.base import ToolFailure
from server.tools.builtin import BuiltinRegistry, BuiltinTool
from server.tools.execution import execute


async def run(name: str, arguments: Any, registry: BuiltinRegistry | None = None, **bounds: Any) -> Any:
    return await execute(registry or BuiltinRegistry(), name, json.dumps(arguments), **bounds)


@pytest.mark.parametrize(
    ("expression", "expected"),
    [("(2 + 3) * 4", "20"), ("2 ** 10 - 24", "1000"), ("sqrt(16) + abs(-1)", "5"), ("7 / 2", "3.5")],
)
async def test_the_calculator_computes(expression: str, expected: str) -> None:
    outcome = await run("calculator", {"expression": expression})
    assert (outcome.status, outcome.output) == ("completed", expected)


@pytest.mark.parametrize(
    "expression",
    [
        "__import__('os').system('true')",
        "open('/etc/passwd').read()",
        "9 ** 9 ** 9 ** 9",
        "999999 ** 4000000",
        "(2 ** 4000) ** 4000",
        "1 / 0",
        "'a' * 10",
        "",
    ],
)
async def test_the_calculator_refuses_what_is_not_bounded_arithmetic(expression: str) -> None:
    outcome = await run("calculator", {"expression": expression})
    assert (outcome.status, outcome.error_reason) == ("failed", "TOOL_FAILED")
    assert json.loads(outcome.output)["error"]["reason"] == "TOOL_FAILED"


async def test_current_time_takes_an_iana_zone() -> None:
    paris = await run("current_time", {"timezone": "Europe/Paris"})
    assert paris.status == "completed" and paris.output[-6:] in ("+01:00", "+02:00")
    assert (await run("current_time", {})).output.endswith("+00:00")
    bad = await run("current_time", {"timezone": "Mars/Olympus"})
    assert bad.error_reason == "TOOL_FAILED" and "Mars/Olympus" in bad.error_message


async def test_echo_and_bad_arguments() -> None:
    assert (await run("echo", {"text": "hi"})).output == "hi"
    assert (await execute(BuiltinRegistry(), "echo", "[1, 2]")).error_reason == "TOOL_FAILED"
    assert (await execute(BuiltinRegistry(), "echo", "{not json")).error_reason == "TOOL_FAILED"
    assert (await run("nope", {})).error_message == "no built-in tool 'nope'"


async def test_an_operator_tool_is_bounded_in_time_and_output() -> None:
    async def slow(arguments: dict[str, Any]) -> str:
        await asyncio.sleep(5)
        return "late"

    def raising(arguments: dict[str, Any]) -> str:
        raise RuntimeError("secret detail")

    def refusing(arguments: dict[str, Any]) -> str:
        raise ToolFailure("TOOL_UNAVAILABLE", "the backing service is down")

    registry = BuiltinRegistry()
    registry.register(BuiltinTool("slow", "sleeps", slow))
    registry.register(BuiltinTool("raising", "raises", raising))
    registry.register(BuiltinTool("refusing", "refuses", refusing))
    registry.register(BuiltinTool("big", "big output", lambda arguments: "x" * 100))
    with pytest.raises(ValueError):
        registry.register(BuiltinTool("echo", "a second echo", lambda arguments: ""))
    timed_out = await run("slow", {}, registry, timeout_s=0.05)
    assert (timed_out.status, timed_out.error_reason) == ("failed", "TOOL_TIMEOUT")
    crashed = await run("raising", {}, registry)
    assert crashed.error_reason == "TOOL_FAILED" and "secret detail" not in crashed.output
    assert (await run("refusing", {}, registry)).error_reason == "TOOL_UNAVAILABLE"
    cut = await run("big", {}, registry, max_output_bytes=10)
    assert cut.output == "xxxxxxxxxx\n[output truncated: 10 of 100 bytes]"
