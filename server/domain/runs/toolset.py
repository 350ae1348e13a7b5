"""The tools of one run: what the model is offered, and who runs each call.

Three kinds, by executor: ``client`` (OpenAI function tools the caller
answers with SubmitToolOutputs), ``builtin`` (the server's registry) and
``mcp:<server id>`` (an MCP server's approved tools, named
``<server id>__<tool>``). A session's ``allowed_tools`` filters all three.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from server.domain.agents import AgentFields
from server.domain.errors import AgentAPIError
from server.domain.sessions import tool_name
from server.tools.base import ToolDefinition, ToolExecutor
from server.tools.builtin import BuiltinRegistry

CLIENT = "client"


@dataclass(frozen=True)
class ServerTool:
    """A tool the server runs.

    Attributes:
        definition: what the model sees.
        executor: runs the call.
        remote_name: the tool's name on its executor (without a prefix).
        needs_approval: a call waits for a person's approval first.
    """

    definition: ToolDefinition
    executor: ToolExecutor
    remote_name: str
    needs_approval: bool = False


class McpTools(Protocol):
    """The MCP side: the approved tools of the servers an agent names."""

    async def server_tools(self, entries: Sequence[dict[str, Any]]) -> Sequence[ServerTool]:
        """The tools each entry (``server_id``, ``allowed_tools``,
        ``require_approval``, ``approval_required_tools``) allows, with their
        approval policy applied. Raises FAILED_PRECONDITION (MCP_SERVER_NOT_FOUND)."""


@dataclass
class Toolset:
    """The run's tools: ``openai`` is what the model is offered."""

    client_tools: list[dict[str, Any]] = field(default_factory=list)
    server: dict[str, ServerTool] = field(default_factory=dict)

    @property
    def openai(self) -> list[dict[str, Any]]:
        """Every tool in OpenAI's ``tools`` shape: client tools first."""
        return [*self.client_tools, *(tool.definition.openai() for tool in self.server.values())]

    def executor_of(self, name: str) -> str:
        """``client``, ``builtin`` or ``mcp:<server id>`` for a called function name."""
        tool = self.server.get(name)
        return tool.definition.executor if tool else CLIENT


async def build_toolset(
    client_tools: list[dict[str, Any]],
    agent: AgentFields | None,
    allowed_tools: Sequence[str],
    registry: BuiltinRegistry,
    mcp: McpTools | None,
) -> Toolset:
    """The run's tools. ``client_tools`` are the effective function tools
    (already filtered by ``allowed_tools``); the agent's built-in and MCP tools
    are added, filtered by ``allowed_tools`` when it is not empty.

    Raises FAILED_PRECONDITION (UNKNOWN_BUILTIN_TOOL) when the agent names a
    tool the registry no longer has, and what ``mcp`` raises; a name that
    collides with a client tool is refused the same way (TOOL_NAME_CONFLICT).
    """
    toolset = Toolset(client_tools=list(client_tools))
    if agent is None:
        return toolset
    allowed = set(allowed_tools)
    candidates: list[ServerTool] = []
    for name in agent.builtin_tools:
        definition = registry.definition(name)
        if definition is None:
            raise AgentAPIError(
                "FAILED_PRECONDITION",
                "UNKNOWN_BUILTIN_TOOL",
                f"the agent names built-in tool {name!r}, which this server does not have",
                {"tool": name},
            )
        candidates.append(ServerTool(definition, registry, name))
    if agent.mcp_servers and mcp is None:
        raise AgentAPIError("FAILED_PRECONDITION", "MCP_UNAVAILABLE", "this server has no MCP support configured")
    if agent.mcp_servers:
        candidates.extend(await mcp.server_tools(agent.mcp_servers))  # type: ignore[union-attr]
    client_names = {tool_name(t) for t in client_tools}
    for tool in candidates:
        name = tool.definition.name
        if allowed and name not in allowed:
            continue
        if name in client_names or name in toolset.server:
            raise AgentAPIError(
                "FAILED_PRECONDITION",
                "TOOL_NAME_CONFLICT",
                f"two of the agent's tools are named {name!r}",
                {"tool": name},
            )
        toolset.server[name] = tool
    return toolset
