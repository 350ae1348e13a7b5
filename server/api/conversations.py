"""ConversationService servicer."""

from __future__ import annotations

import grpc

from agentapi import v1 as pb
from server.api import convert
from server.api.interceptor import current_principal
from server.domain.conversations import ConversationService


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
        page = await self.conversations.list(
            current_principal(), request.page_size, request.page_token, request.show_deleted
        )
        return pb.ListConversationsResponse(
            conversations=[convert.conversation(r) for r in page.rows],
            next_page_token=page.next_page_token,
            previous_page_token=page.previous_page_token,
        )

    async def UpdateConversation(
        self, request: pb.UpdateConversationRequest, context: grpc.aio.ServicerContext
    ) -> pb.UpdateConversationResponse:
        row = await self.conversations.update(
            current_principal(),
            request.conversation.id,
            request.conversation.title,
            convert.from_struct(request.conversation.metadata),
            list(request.update_mask.paths),
            request.conversation.etag,
        )
        return pb.UpdateConversationResponse(conversation=convert.conversation(row))

    async def DeleteConversation(
        self, request: pb.DeleteConversationRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteConversationResponse:
        row = await self.conversations.delete(current_principal(), request.conversation_id)
        return pb.DeleteConversationResponse(conversation=convert.conversation(row))

    async def UndeleteConversation(
        self, request: pb.UndeleteConversationRequest, context: grpc.aio.ServicerContext
    ) -> pb.UndeleteConversationResponse:
        row = await self.conversations.undelete(current_principal(), request.conversation_id)
        return pb.UndeleteConversationResponse(conversation=convert.conversation(row))
