# Generated from agentapi/_async by scripts/unasync_client.py. Do not edit.
"""Agents, conversations, models, tenants, API keys, usage and MCP servers."""

from __future__ import annotations

from collections.abc import Iterator, Iterable, Sequence
from datetime import datetime
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from agentapi import v1 as pb
from agentapi._sync.base import SyncResource, build, mask
from agentapi._retry import Safety


class Agents(SyncResource):
    """AgentService. An agent id is its UUID or its key."""

    _service = "AgentService"

    def create(
        self, agent: pb.Agent | None = None, *, agent_id: str = "", idempotency_key: str | None = None, **fields: Any
    ) -> pb.Agent:
        """Creates an agent from ``agent`` and/or keyword fields (``key``, ``default_model``, ``system_prompt``, ...).

        Raises:
            AlreadyExistsError: the key is in use. InvalidArgumentError: a field is invalid.
        """
        request = pb.CreateAgentRequest(agent=build(pb.Agent, agent, fields), agent_id=agent_id)
        response = self._call("CreateAgent", request, pb.CreateAgentResponse, Safety.KEYED, idempotency_key)
        return response.agent

    def get(self, agent_id: str) -> pb.Agent:
        """The agent (current revision). Raises NotFoundError."""
        return (self._call("GetAgent", pb.GetAgentRequest(agent_id=agent_id), pb.GetAgentResponse)).agent

    def list(self, *, page_size: int = 0, filter: str = "", show_deleted: bool = False) -> Iterator[pb.Agent]:
        """Every agent, page after page (``page_size`` per call; 0: the server's default).
        ``filter`` is AIP-160 (e.g. ``default_model = "gpt-4o"``)."""
        request = pb.ListAgentsRequest(page_size=page_size, filter=filter, show_deleted=show_deleted)
        return self._items("ListAgents", request, pb.ListAgentsResponse, "agents")

    def pages(
        self, *, page_size: int = 0, filter: str = "", show_deleted: bool = False
    ) -> Iterator[pb.ListAgentsResponse]:
        """The pages of ``list()``, whole."""
        request = pb.ListAgentsRequest(page_size=page_size, filter=filter, show_deleted=show_deleted)
        return self._pages("ListAgents", request, pb.ListAgentsResponse)

    def update(
        self, agent_id: str, agent: pb.Agent | None = None, *, update_mask: Iterable[str] | None = None, **fields: Any
    ) -> pb.Agent:
        """Sets the fields given (``update_mask`` defaults to their names; with ``agent``, pass it);
        a new revision. Raises NotFoundError, InvalidArgumentError, ConflictError (ETAG_MISMATCH)."""
        body = build(pb.Agent, agent, fields)
        body.id = agent_id
        request = pb.UpdateAgentRequest(agent=body, update_mask=mask(update_mask, fields, body))
        return (self._call("UpdateAgent", request, pb.UpdateAgentResponse, Safety.UNSAFE)).agent

    def delete(self, agent_id: str) -> pb.Agent:
        """Soft-deletes the agent (``undelete`` restores it until it expires)."""
        request = pb.DeleteAgentRequest(agent_id=agent_id)
        return (self._call("DeleteAgent", request, pb.DeleteAgentResponse, Safety.UNSAFE)).agent

    def undelete(self, agent_id: str) -> pb.Agent:
        """Restores a soft-deleted agent."""
        request = pb.UndeleteAgentRequest(agent_id=agent_id)
        return (self._call("UndeleteAgent", request, pb.UndeleteAgentResponse, Safety.UNSAFE)).agent

    def revisions(self, agent_id: str, *, page_size: int = 0) -> Iterator[pb.AgentRevision]:
        """Every revision of the agent, newest first."""
        request = pb.ListAgentRevisionsRequest(agent_id=agent_id, page_size=page_size)
        return self._items("ListAgentRevisions", request, pb.ListAgentRevisionsResponse, "revisions")


class Conversations(SyncResource):
    """ConversationService."""

    _service = "ConversationService"

    def create(
        self, conversation: pb.Conversation | None = None, *, idempotency_key: str | None = None, **fields: Any
    ) -> pb.Conversation:
        """Creates a conversation (``title``, ``metadata``)."""
        request = pb.CreateConversationRequest(conversation=build(pb.Conversation, conversation, fields))
        response = self._call(
            "CreateConversation", request, pb.CreateConversationResponse, Safety.KEYED, idempotency_key
        )
        return response.conversation

    def get(self, conversation_id: str) -> pb.Conversation:
        """The conversation. Raises NotFoundError."""
        request = pb.GetConversationRequest(conversation_id=conversation_id)
        return (self._call("GetConversation", request, pb.GetConversationResponse)).conversation

    def list(self, *, page_size: int = 0, show_deleted: bool = False) -> Iterator[pb.Conversation]:
        """Every conversation of the caller's tenant, page after page."""
        request = pb.ListConversationsRequest(page_size=page_size, show_deleted=show_deleted)
        return self._items("ListConversations", request, pb.ListConversationsResponse, "conversations")

    def pages(self, *, page_size: int = 0, show_deleted: bool = False) -> Iterator[pb.ListConversationsResponse]:
        """The pages of ``list()``, whole."""
        request = pb.ListConversationsRequest(page_size=page_size, show_deleted=show_deleted)
        return self._pages("ListConversations", request, pb.ListConversationsResponse)

    def update(
        self, conversation_id: str, *, update_mask: Iterable[str] | None = None, **fields: Any
    ) -> pb.Conversation:
        """Sets the fields given (``title``, ``metadata``)."""
        body = pb.Conversation(id=conversation_id, **fields)
        request = pb.UpdateConversationRequest(conversation=body, update_mask=mask(update_mask, fields, body))
        return (
            self._call("UpdateConversation", request, pb.UpdateConversationResponse, Safety.UNSAFE)
        ).conversation

    def delete(self, conversation_id: str) -> pb.Conversation:
        """Soft-deletes the conversation."""
        request = pb.DeleteConversationRequest(conversation_id=conversation_id)
        return (
            self._call("DeleteConversation", request, pb.DeleteConversationResponse, Safety.UNSAFE)
        ).conversation


class Models(SyncResource):
    """ModelService."""

    _service = "ModelService"

    def list(self) -> Sequence[pb.Model]:
        """The upstream catalog (one call; not paged)."""
        return list((self._call("ListModels", pb.ListModelsRequest(), pb.ListModelsResponse)).models)


class Tenants(SyncResource):
    """TenantService (master key)."""

    _service = "TenantService"

    def create(
        self, tenant: pb.Tenant | None = None, *, idempotency_key: str | None = None, **fields: Any
    ) -> pb.Tenant:
        """Creates a tenant (``id``, ``display_name``, ``budget``, ``rate_limits``). Raises PermissionDeniedError."""
        request = pb.CreateTenantRequest(tenant=build(pb.Tenant, tenant, fields))
        return (
            self._call("CreateTenant", request, pb.CreateTenantResponse, Safety.KEYED, idempotency_key)
        ).tenant

    def get(self, tenant_id: str) -> pb.Tenant:
        """The tenant. Raises NotFoundError."""
        return (self._call("GetTenant", pb.GetTenantRequest(tenant_id=tenant_id), pb.GetTenantResponse)).tenant

    def list(self, *, page_size: int = 0) -> Iterator[pb.Tenant]:
        """Every tenant, page after page."""
        return self._items("ListTenants", pb.ListTenantsRequest(page_size=page_size), pb.ListTenantsResponse, "tenants")

    def update(self, tenant_id: str, *, update_mask: Iterable[str] | None = None, **fields: Any) -> pb.Tenant:
        """Sets the fields given."""
        body = pb.Tenant(id=tenant_id, **fields)
        request = pb.UpdateTenantRequest(tenant=body, update_mask=mask(update_mask, fields, body))
        return (self._call("UpdateTenant", request, pb.UpdateTenantResponse, Safety.UNSAFE)).tenant

    def delete(self, tenant_id: str) -> pb.Tenant:
        """Deletes the tenant."""
        request = pb.DeleteTenantRequest(tenant_id=tenant_id)
        return (self._call("DeleteTenant", request, pb.DeleteTenantResponse, Safety.UNSAFE)).tenant


class ApiKeys(SyncResource):
    """ApiKeyService."""

    _service = "ApiKeyService"

    def create(
        self, api_key: pb.ApiKey | None = None, *, idempotency_key: str | None = None, **fields: Any
    ) -> pb.CreateApiKeyResponse:
        """Creates a key (``tenant_id``, ``display_name``, ``scope``). The response's ``secret``
        is shown once; only its SHA-256 is stored."""
        request = pb.CreateApiKeyRequest(api_key=build(pb.ApiKey, api_key, fields))
        return self._call("CreateApiKey", request, pb.CreateApiKeyResponse, Safety.KEYED, idempotency_key)

    def list(self, *, tenant_id: str = "", page_size: int = 0) -> Iterator[pb.ApiKey]:
        """Every key of the tenant (the caller's when empty), page after page; never a secret."""
        request = pb.ListApiKeysRequest(tenant_id=tenant_id, page_size=page_size)
        return self._items("ListApiKeys", request, pb.ListApiKeysResponse, "api_keys")

    def revoke(self, api_key_id: str) -> pb.ApiKey:
        """Revokes the key: it authenticates nothing from now on."""
        request = pb.RevokeApiKeyRequest(api_key_id=api_key_id)
        return (self._call("RevokeApiKey", request, pb.RevokeApiKeyResponse, Safety.UNSAFE)).api_key


class Usage(SyncResource):
    """UsageService."""

    _service = "UsageService"

    def get(
        self,
        *,
        group_by: Sequence[pb.UsageDimension.ValueType] = (),
        start_time: datetime | None = None,
        end_time: datetime | None = None,
        tenant_id: str = "",
    ) -> pb.GetUsageResponse:
        """Tokens and cost (USD) from ``start_time`` (inclusive) to ``end_time`` (exclusive), in rows
        grouped by ``group_by`` (``pb.USAGE_DIMENSION_MODEL``, ...) plus a ``total`` row."""
        request = pb.GetUsageRequest(tenant_id=tenant_id, group_by=list(group_by))
        for name, value in (("start_time", start_time), ("end_time", end_time)):
            if value is not None:
                stamp = Timestamp()
                stamp.FromDatetime(value)
                getattr(request, name).CopyFrom(stamp)
        return self._call("GetUsage", request, pb.GetUsageResponse)


class McpServers(SyncResource):
    """McpServerService (master key)."""

    _service = "McpServerService"

    def create(
        self, mcp_server: pb.McpServer | None = None, *, idempotency_key: str | None = None, **fields: Any
    ) -> pb.McpServer:
        """Registers an MCP server (``id``, ``transport``, ``url`` or ``command``, ...)."""
        request = pb.CreateMcpServerRequest(mcp_server=build(pb.McpServer, mcp_server, fields))
        response = self._call(
            "CreateMcpServer", request, pb.CreateMcpServerResponse, Safety.KEYED, idempotency_key
        )
        return response.mcp_server

    def get(self, mcp_server_id: str) -> pb.McpServer:
        """The MCP server. Raises NotFoundError."""
        request = pb.GetMcpServerRequest(mcp_server_id=mcp_server_id)
        return (self._call("GetMcpServer", request, pb.GetMcpServerResponse)).mcp_server

    def list(self, *, page_size: int = 0) -> Iterator[pb.McpServer]:
        """Every MCP server, page after page."""
        request = pb.ListMcpServersRequest(page_size=page_size)
        return self._items("ListMcpServers", request, pb.ListMcpServersResponse, "mcp_servers")

    def update(
        self, mcp_server_id: str, *, update_mask: Iterable[str] | None = None, **fields: Any
    ) -> pb.McpServer:
        """Sets the fields given (``display_name``, ``url``, ``timeout``, ...)."""
        body = pb.McpServer(id=mcp_server_id, **fields)
        request = pb.UpdateMcpServerRequest(mcp_server=body, update_mask=mask(update_mask, fields, body))
        return (self._call("UpdateMcpServer", request, pb.UpdateMcpServerResponse, Safety.UNSAFE)).mcp_server

    def delete(self, mcp_server_id: str) -> pb.McpServer:
        """Removes the MCP server."""
        request = pb.DeleteMcpServerRequest(mcp_server_id=mcp_server_id)
        return (self._call("DeleteMcpServer", request, pb.DeleteMcpServerResponse, Safety.UNSAFE)).mcp_server

    def tools(self, mcp_server_id: str, *, use_cache: bool = False) -> Sequence[pb.McpTool]:
        """The server's tools with their approval state (discovered now unless ``use_cache``)."""
        request = pb.ListMcpServerToolsRequest(mcp_server_id=mcp_server_id, use_cache=use_cache)
        return list((self._call("ListMcpServerTools", request, pb.ListMcpServerToolsResponse)).tools)

    def approve_tools(self, mcp_server_id: str, tool_names: Sequence[str]) -> pb.ApproveMcpServerToolsResponse:
        """Approves the named tools at their current definitions."""
        request = pb.ApproveMcpServerToolsRequest(mcp_server_id=mcp_server_id, tool_names=list(tool_names))
        return self._call("ApproveMcpServerTools", request, pb.ApproveMcpServerToolsResponse, Safety.UNSAFE)
