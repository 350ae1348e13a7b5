"""A stdio MCP server (official SDK) for the tests: the SDK's stdio client runs
it as a subprocess. ``add`` adds; ``env_digest`` returns the SHA-256 of an
environment variable's value (proving the stored env reached the process
without echoing the secret); ``slow`` sleeps."""

from __future__ import annotations

import asyncio
import hashlib
import os

from mcp.server.mcpserver import MCPServer

mcp = MCPServer("agentapi-stdio-test")


@mcp.tool(description="Adds two integers.")
def add(a: int, b: int) -> int:
    return a + b


@mcp.tool(description="Returns the SHA-256 of an environment variable's value.")
def env_digest(name: str) -> str:
    value = os.environ.get(name)
    return "<unset>" if value is None else hashlib.sha256(value.encode()).hexdigest()


@mcp.tool(description="Sleeps, then answers.")
async def slow(seconds: float) -> str:
    await asyncio.sleep(seconds)
    return f"slept {seconds}"


if __name__ == "__main__":
    mcp.run("stdio")
