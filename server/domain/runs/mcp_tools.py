"""The MCP tools of a run: an agent's MCP server entries applied to the
registered servers' approved tools (server/domain/mcp_servers.py)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from server.domain.errors import AgentAPIError
from server.domain.mcp_servers import McpServerService
from server.domain.runs.toolset import ServerTool
from server.tools.mcp import split_function_name


class McpRunTools:
    """:class:`~server.domain.runs.toolset.McpTools` over the MCP server registry."""

    def __init__(self, servers: McpServerService) -> None:
        self.servers = servers

    async def server_tools(self, entries: Sequence[dict[str, Any]]) -> list[ServerTool]:
        """The approved tools each entry allows; a call needs approval when the
        entry's ``require_approval`` is ``always``, or ``per_tool`` and the tool
        is in ``approval_required_tools``. Raises FAILED_PRECONDITION
        (MCP_SERVER_NOT_FOUND) for a server that is no longer registered."""
        toolsets = await self.servers.toolsets(entry["server_id"] for entry in entries)
        tools = []
        for entry in entries:
            toolset = toolsets.get(entry["server_id"])
            if toolset is None:
                raise AgentAPIError(
                    "FAILED_PRECONDITION",
                    "MCP_SERVER_NOT_FOUND",
                    f"the agent names MCP server {entry['server_id']!r}, which is not registered",
                    {"mcp_server_id": entry["server_id"]},
                )
            allowed = set(entry.get("allowed_tools") or ())
            mode = entry.get("require_approval") or "never"
            per_tool = set(entry.get("approval_required_tools") or ())
            for definition in toolset.definitions:
                remote = (split_function_name(definition.name) or ("", definition.name))[1]
                if allowed and remote not in allowed:
                    continue
                needs_approval = mode == "always" or (mode == "per_tool" and remote in per_tool)
                tools.append(ServerTool(definition, toolset.executor, remote, needs_approval))
        return tools
