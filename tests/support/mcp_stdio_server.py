"""A stdio MCP server (official SDK) for the tests: the SDK's stdio client runs
it as a subprocess. ``add`` adds; ``env`` returns an environment variable's
value (to prove the stored env reached the process); ``slow`` sleeps."""

from __future__ import annotations

import asyncio
import os

from mcp.server.mcpserver import MCPServer

mcp = MCPServer("agentapi-stdio-test")


@mcp.tool(description="Adds two integers.")
def add(a: int, b: int) -> int:
    return a + b


@mcp.tool(description="Returns the value of an environment variable.")
def env(name: str) -> str:
    return os.environ.get(name, "<unset>")


@mcp.tool(description="Sleeps, then answers.")
async def slow(seconds: float) -> str:
    await asyncio.sleep(seconds)
    return f"slept {seconds}"


if __name__ == "__main__":
    mcp.run("stdio")
