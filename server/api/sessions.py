"""SessionService servicer: sessions, turns (unary and streamed), tool outputs,
messages and transcripts."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

import grpc

from agentapi import v1 as pb
from server.api import convert, message_convert, turn_options
from server.api.interceptor import current_principal
from server.domain.forks import fork
from server.domain.message_history import MessageHistoryService
from server.domain.runs import InputMessage, TurnEvent, TurnRunner
from server.domain.runs.approvals import Approval
from server.domain.sessions import SessionService
from server.domain.transcripts import TranscriptService, unknown_format
from server.store.message_history import SearchFilters

EXPORT_FORMATS = {
    pb.EXPORT_FORMAT_UNSPECIFIED: "openai_json",
    pb.EXPORT_FORMAT_OPENAI_JSON: "openai_json",
    pb.EXPORT_FORMAT_JSONL: "jsonl",
    pb.EXPORT_FORMAT_MARKDOWN: "markdown",
}


async def _stream_events(events: AsyncIterator[TurnEvent], response: Any) -> AsyncIterator[Any]:
    """A turn's events as ``response`` messages (turn_started, input_message,
    delta, assistant_message); a failed turn ends with its typed status after
    the stored FAILED message."""
    async with aclosing(events):
        async for event in events:
            if event.kind == "delta":
                yield response(delta=message_convert.delta(event.delta))
            elif event.kind == "started":
                yield response(turn_started=message_convert.turn_started(event.message))
            elif event.kind == "tool_started":
                yield response(tool_call_started=message_convert.tool_call_started(event.message, event.call))
            elif event.kind == "tool_completed":
                yield response(tool_call_completed=message_convert.message(event.message))
            elif event.kind == "input":
                yield response(input_message=message_convert.message(event.message))
            else:
                yield response(assistant_message=message_convert.message(event.message))
                if event.error is not None:
                    raise event.error


class SessionServicer(pb.SessionServiceServicer):
    """Serves ``agentapi.v1.SessionService``."""

    def __init__(self, sessions: SessionService, turns: TurnRunner, transcripts: TranscriptService) -> None:
        self.sessions = sessions
        self.turns = turns
        self.transcripts = transcripts
        self.history = MessageHistoryService(sessions.db, sessions.tokens)

    async def CreateSession(
        self, request: pb.CreateSessionRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateSessionResponse:
        view = await self.sessions.create(
            current_principal(),
            request.session.agent_id,
            request.session.conversation_id,
            convert.settings_from_proto(request.session.overrides),
            convert.from_struct(request.session.metadata),
            request.carry_forward_history,
        )
        return pb.CreateSessionResponse(session=convert.session(view))

    async def GetSession(
        self, request: pb.GetSessionRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetSessionResponse:
        return pb.GetSessionResponse(
            session=convert.session(await self.sessions.get(current_principal(), request.session_id))
        )

    def _run(
        self,
        context: grpc.aio.ServicerContext,
        session_id: str,
        inputs: list[InputMessage],
        options: pb.TurnOptions,
        inputs_path: str = "messages",
        approvals: list[Approval] | None = None,
    ) -> AsyncIterator[TurnEvent]:
        return self.turns.run(
            current_principal(),
            session_id,
            inputs,
            turn_options.from_proto(options),
            context.time_remaining(),
            inputs_path,
            approvals or (),
        )

    async def SendMessage(
        self, request: pb.SendMessageRequest, context: grpc.aio.ServicerContext
    ) -> pb.SendMessageResponse:
        response = pb.SendMessageResponse()
        inputs = [message_convert.input_message(m) for m in request.messages]
        async with aclosing(self._run(context, request.session_id, inputs, request.options)) as events:
            async for event in events:
                if event.kind == "input":
                    response.input_messages.append(message_convert.message(event.message))
                elif event.kind == "final":
                    if event.error is not None:
                        raise event.error
                    response.message.CopyFrom(message_convert.message(event.message))
        return response

    def SendStreamingMessage(
        self, request: pb.SendStreamingMessageRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.SendStreamingMessageResponse]:
        inputs = [message_convert.input_message(m) for m in request.messages]
        events = self._run(context, request.session_id, inputs, request.options)
        return _stream_events(events, pb.SendStreamingMessageResponse)

    def SubmitToolOutputs(
        self, request: pb.SubmitToolOutputsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.SubmitToolOutputsResponse]:
        inputs = [
            InputMessage(role="tool", content=output.output, tool_call_id=output.tool_call_id)
            for output in request.tool_outputs
        ]
        approvals = [Approval(a.tool_call_id, a.approve, a.reason) for a in request.approvals]
        events = self._run(context, request.session_id, inputs, request.options, "tool_outputs", approvals)
        return _stream_events(events, pb.SubmitToolOutputsResponse)

    def RegenerateMessage(
        self, request: pb.RegenerateMessageRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.RegenerateMessageResponse]:
        events = self.turns.run(
            current_principal(),
            request.session_id,
            [],
            turn_options.from_proto(request.options),
            context.time_remaining(),
            regenerate=request.message_id,
        )
        return _stream_events(events, pb.RegenerateMessageResponse)

    async def ForkSession(
        self, request: pb.ForkSessionRequest, context: grpc.aio.ServicerContext
    ) -> pb.ForkSessionResponse:
        edited = request.edited_content if request.HasField("edited_content") else None
        view, messages = await fork(
            self.sessions.db, current_principal(), request.session_id, request.message_id, edited
        )
        return pb.ForkSessionResponse(
            session=convert.session(view), messages=[message_convert.message(m) for m in messages]
        )

    async def ListMessages(
        self, request: pb.ListMessagesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListMessagesResponse:
        page = await self.sessions.list_messages(
            current_principal(),
            request.session_id,
            request.page_size,
            request.page_token,
            request.filter,
            request.show_deleted,
        )
        return pb.ListMessagesResponse(
            messages=[message_convert.message(r) for r in page.rows],
            next_page_token=page.next_page_token,
            previous_page_token=page.previous_page_token,
        )

    # DeleteMessage and SearchMessages (issue 22): server/domain/message_history.py.
    async def DeleteMessage(
        self, request: pb.DeleteMessageRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteMessageResponse:
        deleted = await self.history.delete(current_principal(), request.session_id, request.message_id, request.force)
        return pb.DeleteMessageResponse(messages=[message_convert.message(m) for m in deleted])

    async def SearchMessages(
        self, request: pb.SearchMessagesRequest, context: grpc.aio.ServicerContext
    ) -> pb.SearchMessagesResponse:
        filters = SearchFilters(
            conversation_id=request.conversation_id,
            session_id=request.session_id,
            agent_id=request.agent_id,
            role=message_convert.ROLE_FROM_PROTO.get(request.role, "") if request.role else "",
            start_time=convert.to_datetime(request.start_time, request.HasField("start_time")),
            end_time=convert.to_datetime(request.end_time, request.HasField("end_time")),
        )
        page = await self.history.search(
            current_principal(), request.query, filters, request.page_size, request.page_token
        )
        return pb.SearchMessagesResponse(
            results=[
                pb.MessageSearchResult(
                    message=message_convert.message(hit.message),
                    conversation_id=hit.conversation_id,
                    snippet=hit.snippet,
                    score=hit.score,
                )
                for hit in page.hits
            ],
            next_page_token=page.next_page_token,
        )

    async def EndSession(
        self, request: pb.EndSessionRequest, context: grpc.aio.ServicerContext
    ) -> pb.EndSessionResponse:
        view = await self.sessions.end(current_principal(), request.session_id)
        return pb.EndSessionResponse(session=convert.session(view))

    async def DeleteSession(
        self, request: pb.DeleteSessionRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteSessionResponse:
        deleted = await self.sessions.delete_empty(current_principal(), request.session_id)
        return pb.DeleteSessionResponse(conversation_deleted=deleted)

    async def ListSessions(
        self, request: pb.ListSessionsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListSessionsResponse:
        page = await self.sessions.list(
            current_principal(), request.conversation_id, request.page_size, request.page_token
        )
        return pb.ListSessionsResponse(
            sessions=[convert.session(v) for v in page.rows],
            next_page_token=page.next_page_token,
            previous_page_token=page.previous_page_token,
        )

    async def ExportSession(
        self, request: pb.ExportSessionRequest, context: grpc.aio.ServicerContext
    ) -> pb.ExportSessionResponse:
        format_name = EXPORT_FORMATS.get(request.format)
        if format_name is None:
            raise unknown_format(request.format)
        content_type, content = await self.transcripts.export(current_principal(), request.session_id, format_name)
        return pb.ExportSessionResponse(content_type=content_type, content=content)

    async def ReplaySession(
        self, request: pb.ReplaySessionRequest, context: grpc.aio.ServicerContext
    ) -> pb.ReplaySessionResponse:
        view, messages = await self.transcripts.replay(
            current_principal(), request.session_id, request.model, context.time_remaining()
        )
        return pb.ReplaySessionResponse(
            session=convert.session(view), messages=[message_convert.message(m) for m in messages]
        )

    # EraseTurn (issue 21, OpenAI's store: false): server/domain/turn_erasure.py.
    async def EraseTurn(self, request: pb.EraseTurnRequest, context: grpc.aio.ServicerContext) -> pb.EraseTurnResponse:
        from server.domain.turn_erasure import erase_turn  # here: this file's imports belong to the run's work

        erased = await erase_turn(self.sessions.db, current_principal(), request.session_id, request.message_id)
        return pb.EraseTurnResponse(messages=[message_convert.message(m) for m in erased])
