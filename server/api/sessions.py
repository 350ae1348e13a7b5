"""SessionService servicer: sessions, turns (unary and streamed) and messages."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing

import grpc

from agentapi import v1 as pb
from server.api import convert
from server.api.interceptor import current_principal
from server.domain.sessions import SessionService, Settings
from server.domain.turns import TurnEvent, TurnRunner


def _options(options: pb.TurnOptions) -> Settings:
    return Settings(
        temperature=options.temperature if options.HasField("temperature") else None,
        max_output_tokens=options.max_output_tokens if options.HasField("max_output_tokens") else None,
    )


class SessionServicer(pb.SessionServiceServicer):
    """Serves ``agentapi.v1.SessionService``."""

    def __init__(self, sessions: SessionService, turns: TurnRunner) -> None:
        self.sessions = sessions
        self.turns = turns

    async def CreateSession(
        self, request: pb.CreateSessionRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateSessionResponse:
        view = await self.sessions.create(
            current_principal(),
            request.session.agent_id,
            request.session.conversation_id,
            convert.settings_from_proto(request.session.overrides),
            convert.from_struct(request.session.metadata),
        )
        return pb.CreateSessionResponse(session=convert.session(view))

    async def GetSession(
        self, request: pb.GetSessionRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetSessionResponse:
        return pb.GetSessionResponse(
            session=convert.session(await self.sessions.get(current_principal(), request.session_id))
        )

    def _run(self, request: pb.SendMessageRequest | pb.SendStreamingMessageRequest) -> AsyncIterator[TurnEvent]:
        return self.turns.run(
            current_principal(),
            request.session_id,
            [convert.input_message(m) for m in request.messages],
            _options(request.options),
        )

    async def SendMessage(
        self, request: pb.SendMessageRequest, context: grpc.aio.ServicerContext
    ) -> pb.SendMessageResponse:
        response = pb.SendMessageResponse()
        async with aclosing(self._run(request)) as events:
            async for event in events:
                if event.kind == "input":
                    response.input_messages.append(convert.message(event.message))
                elif event.kind == "final":
                    if event.error is not None:
                        raise event.error
                    response.message.CopyFrom(convert.message(event.message))
        return response

    async def SendStreamingMessage(
        self, request: pb.SendStreamingMessageRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.SendStreamingMessageResponse]:
        async with aclosing(self._run(request)) as events:
            async for event in events:
                if event.kind == "delta":
                    yield pb.SendStreamingMessageResponse(delta=convert.delta(event.delta))
                elif event.kind == "input":
                    yield pb.SendStreamingMessageResponse(input_message=convert.message(event.message))
                else:
                    yield pb.SendStreamingMessageResponse(assistant_message=convert.message(event.message))
                    if event.error is not None:
                        raise event.error

    async def ListMessages(
        self, request: pb.ListMessagesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListMessagesResponse:
        rows, token = await self.sessions.list_messages(
            current_principal(), request.session_id, request.page_size, request.page_token
        )
        return pb.ListMessagesResponse(messages=[convert.message(r) for r in rows], next_page_token=token)
