"""Operator tools for tests, loaded through AGENTAPI_TOOL_MODULES."""

from __future__ import annotations

import asyncio
from typing import Any

from server.tools.builtin import BuiltinTool

# How many times each tool body started: a tool must never run twice.
STARTED: dict[str, int] = {}


async def _slow(arguments: dict[str, Any]) -> str:
    STARTED["slow"] = STARTED.get("slow", 0) + 1
    await asyncio.sleep(float(arguments.get("seconds", 5)))
    return "finally"


def _big(arguments: dict[str, Any]) -> str:
    return "y" * int(arguments.get("size", 100_000))


TOOLS = [
    BuiltinTool(
        "slow", "Sleeps, then answers.", _slow, {"type": "object", "properties": {"seconds": {"type": "number"}}}
    ),
    BuiltinTool("big", "A large output.", _big, {"type": "object", "properties": {"size": {"type": "integer"}}}),
]
