"""ConversationService servicer."""

from __future__ import annotations

import grpc

from agentapi import v1 as pb
from server.api import convert
from server.api.interceptor import current_principal
from server.domain.sessions import ConversationService


class ConversationServicer(pb.ConversationServiceServicer):
    """Serves ``agentapi.v1.ConversationService``."""

    def __init__(self, conversations: ConversationService) -> None:
        self.conversations = conversations

    async def CreateConversation(
        self, request: pb.CreateConversationRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateConversationResponse:
        row = await self.conversations.create(
            current_principal(), request.conversation.title, convert.from_struct(request.conversation.metadata)
        )
        return pb.CreateConversationResponse(conversation=convert.conversation(row))

    async def GetConversation(
        self, request: pb.GetConversationRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetConversationResponse:
        row = await self.conversations.get(current_principal(), request.conversation_id)
        return pb.GetConversationResponse(conversation=convert.conversation(row))

    async def ListConversations(
        self, request: pb.ListConversationsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListConversationsResponse:
        rows, token = await self.conversations.list(current_principal(), request.page_size, request.page_token)
        return pb.ListConversationsResponse(
            conversations=[convert.conversation(r) for r in rows], next_page_token=token
        )
