"""Operator tools for tests, loaded through AGENTAPI_TOOL_MODULES."""

from __future__ import annotations

import asyncio
import os
from typing import Any

from server.tools.builtin import BuiltinTool

# How many times each tool body started: a tool must never run twice.
STARTED: dict[str, int] = {}


async def _slow(arguments: dict[str, Any]) -> str:
    STARTED["slow"] = STARTED.get("slow", 0) + 1
    await asyncio.sleep(float(arguments.get("seconds", 5)))
    return "finally"


async def _mark(arguments: dict[str, Any]) -> str:
    """Appends a line to the file named by AGENTAPI_TEST_TOOL_LOG (so a test in
    another process can count the runs), then sleeps."""
    with open(os.environ["AGENTAPI_TEST_TOOL_LOG"], "a") as log:
        log.write("ran\n")
    await asyncio.sleep(float(arguments.get("seconds", 0)))
    return "marked"


def _big(arguments: dict[str, Any]) -> str:
    return "y" * int(arguments.get("size", 100_000))


TOOLS = [
    BuiltinTool(
        "slow", "Sleeps, then answers.", _slow, {"type": "object", "properties": {"seconds": {"type": "number"}}}
    ),
    BuiltinTool("mark", "Counts a run in a file, then sleeps.", _mark, {"type": "object", "properties": {}}),
    BuiltinTool("big", "A large output.", _big, {"type": "object", "properties": {"size": {"type": "integer"}}}),
]
