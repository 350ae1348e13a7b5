"""McpServerService servicer, with its proto <-> domain conversions.

Header and env values travel inward only: :func:`mcp_server_fields` reads
them from the request; :func:`mcp_server` returns their names, never values.
"""

from __future__ import annotations

from datetime import datetime

import grpc
from google.protobuf import duration_pb2

from agentapi import v1 as pb
from server.api import convert
from server.api.interceptor import current_principal
from server.domain.mcp_servers import (
    STATE_APPROVED,
    STATE_CHANGED,
    STATE_PENDING,
    McpServerFields,
    McpServerService,
    McpToolView,
)
from server.store.models import McpServerRow
from server.tools import mcp

TRANSPORT_TO_PROTO = {mcp.STREAMABLE_HTTP: pb.MCP_TRANSPORT_STREAMABLE_HTTP, mcp.STDIO: pb.MCP_TRANSPORT_STDIO}
TRANSPORT_FROM_PROTO = {value: key for key, value in TRANSPORT_TO_PROTO.items()}
STATE_TO_PROTO = {
    STATE_PENDING: pb.MCP_TOOL_STATE_PENDING_APPROVAL,
    STATE_APPROVED: pb.MCP_TOOL_STATE_APPROVED,
    STATE_CHANGED: pb.MCP_TOOL_STATE_DEFINITION_CHANGED,
}


def mcp_server_fields(server: pb.McpServer) -> McpServerFields:
    """The writable fields of a request's McpServer (secret values included)."""
    timeout = None
    if server.HasField("timeout"):
        timeout = server.timeout.seconds + server.timeout.nanos / 1e9
    return McpServerFields(
        id=server.id,
        display_name=server.display_name,
        transport=TRANSPORT_FROM_PROTO.get(server.transport, ""),
        url=server.url,
        headers=dict(server.headers),
        command=server.command,
        args=list(server.args),
        env=dict(server.env),
        timeout_s=timeout,
    )


def mcp_server(row: McpServerRow) -> pb.McpServer:
    """A stored server as returned: header and env names, never their values."""
    message = pb.McpServer(
        id=row.id,
        display_name=row.display_name,
        transport=TRANSPORT_TO_PROTO.get(row.transport, pb.MCP_TRANSPORT_UNSPECIFIED),
        url=row.url,
        header_names=list(row.header_names or []),
        command=row.command,
        args=list(row.args or []),
        env_names=list(row.env_names or []),
        timeout=duration_pb2.Duration(seconds=row.timeout_ms // 1000, nanos=row.timeout_ms % 1000 * 1_000_000),
        create_time=convert.timestamp(row.create_time),
        update_time=convert.timestamp(row.update_time),
        tools_discover_time=convert.timestamp(row.tools_discover_time),
    )
    for name, entry in sorted((row.approved_tools or {}).items()):
        message.approved_tools.add(
            name=name,
            definition_hash=entry["definition_hash"],
            approve_time=convert.timestamp(datetime.fromisoformat(entry["approve_time"])),
        )
    return message


def mcp_tool(view: McpToolView) -> pb.McpTool:
    """A listed tool with its state."""
    return pb.McpTool(
        name=view.spec.name,
        description=view.spec.description,
        input_schema=convert.struct(view.spec.input_schema),
        definition_hash=view.definition_hash,
        state=STATE_TO_PROTO[view.state],
        function_name=view.function_name,
    )


class McpServerServicer(pb.McpServerServiceServicer):
    """Serves ``agentapi.v1.McpServerService``."""

    def __init__(self, servers: McpServerService) -> None:
        self.servers = servers

    async def CreateMcpServer(
        self, request: pb.CreateMcpServerRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateMcpServerResponse:
        row = await self.servers.create(current_principal(), mcp_server_fields(request.mcp_server))
        return pb.CreateMcpServerResponse(mcp_server=mcp_server(row))

    async def GetMcpServer(
        self, request: pb.GetMcpServerRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetMcpServerResponse:
        row = await self.servers.get(current_principal(), request.mcp_server_id)
        return pb.GetMcpServerResponse(mcp_server=mcp_server(row))

    async def ListMcpServers(
        self, request: pb.ListMcpServersRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListMcpServersResponse:
        rows, token = await self.servers.list(current_principal(), request.page_size, request.page_token)
        return pb.ListMcpServersResponse(mcp_servers=[mcp_server(r) for r in rows], next_page_token=token)

    async def UpdateMcpServer(
        self, request: pb.UpdateMcpServerRequest, context: grpc.aio.ServicerContext
    ) -> pb.UpdateMcpServerResponse:
        row = await self.servers.update(
            current_principal(), mcp_server_fields(request.mcp_server), list(request.update_mask.paths)
        )
        return pb.UpdateMcpServerResponse(mcp_server=mcp_server(row))

    async def DeleteMcpServer(
        self, request: pb.DeleteMcpServerRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteMcpServerResponse:
        row = await self.servers.delete(current_principal(), request.mcp_server_id)
        return pb.DeleteMcpServerResponse(mcp_server=mcp_server(row))

    async def ListMcpServerTools(
        self, request: pb.ListMcpServerToolsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListMcpServerToolsResponse:
        views = await self.servers.list_tools(current_principal(), request.mcp_server_id, request.use_cache)
        return pb.ListMcpServerToolsResponse(tools=[mcp_tool(v) for v in views])

    async def ApproveMcpServerTools(
        self, request: pb.ApproveMcpServerToolsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ApproveMcpServerToolsResponse:
        row, views = await self.servers.approve_tools(
            current_principal(), request.mcp_server_id, list(request.tool_names), dict(request.definition_hashes)
        )
        return pb.ApproveMcpServerToolsResponse(mcp_server=mcp_server(row), tools=[mcp_tool(v) for v in views])
