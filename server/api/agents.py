"""AgentService servicer: proto in, domain call, proto out."""

from __future__ import annotations

import grpc

from agentapi import v1 as pb
from server.api import convert
from server.api.interceptor import current_principal
from server.domain.agents import AgentService
from server.domain.catalog import Catalog


class AgentServicer(pb.AgentServiceServicer):
    """Serves ``agentapi.v1.AgentService``."""

    def __init__(self, agents: AgentService, catalog: Catalog) -> None:
        self.agents = agents
        self.catalog = catalog

    async def CreateAgent(
        self, request: pb.CreateAgentRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateAgentResponse:
        row = await self.agents.create(current_principal(), convert.agent_fields(request.agent), request.agent_id)
        return pb.CreateAgentResponse(agent=convert.agent(row, await self.catalog.model_ids()))

    async def GetAgent(self, request: pb.GetAgentRequest, context: grpc.aio.ServicerContext) -> pb.GetAgentResponse:
        row = await self.agents.get(current_principal(), request.agent_id)
        return pb.GetAgentResponse(agent=convert.agent(row, await self.catalog.model_ids()))

    async def ListAgents(
        self, request: pb.ListAgentsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListAgentsResponse:
        page = await self.agents.list(
            current_principal(), request.page_size, request.page_token, request.show_deleted, request.filter
        )
        catalog = await self.catalog.model_ids()
        return pb.ListAgentsResponse(
            agents=[convert.agent(r, catalog) for r in page.rows],
            next_page_token=page.next_page_token,
            previous_page_token=page.previous_page_token,
        )

    async def UpdateAgent(
        self, request: pb.UpdateAgentRequest, context: grpc.aio.ServicerContext
    ) -> pb.UpdateAgentResponse:
        row = await self.agents.update(
            current_principal(),
            request.agent.id,
            convert.agent_fields(request.agent),
            list(request.update_mask.paths),
            request.agent.etag,
        )
        return pb.UpdateAgentResponse(agent=convert.agent(row, await self.catalog.model_ids()))

    async def DeleteAgent(
        self, request: pb.DeleteAgentRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteAgentResponse:
        row = await self.agents.delete(current_principal(), request.agent_id)
        return pb.DeleteAgentResponse(agent=convert.agent(row, await self.catalog.model_ids()))

    async def UndeleteAgent(
        self, request: pb.UndeleteAgentRequest, context: grpc.aio.ServicerContext
    ) -> pb.UndeleteAgentResponse:
        row = await self.agents.undelete(current_principal(), request.agent_id)
        return pb.UndeleteAgentResponse(agent=convert.agent(row, await self.catalog.model_ids()))

    async def ListAgentRevisions(
        self, request: pb.ListAgentRevisionsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListAgentRevisionsResponse:
        rows, token = await self.agents.list_revisions(
            current_principal(), request.agent_id, request.page_size, request.page_token
        )
        return pb.ListAgentRevisionsResponse(revisions=[convert.agent_revision(r) for r in rows], next_page_token=token)
