"""SessionService servicer: sessions, turns (unary and streamed), tool outputs,
messages and transcripts."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing

import grpc

from agentapi import v1 as pb
from server.api import convert, message_convert, turn_options
from server.api.interceptor import current_principal
from server.api.turn_streams import STREAMING, as_type, encoder, relay
from server.domain.errors import AgentAPIError
from server.domain.forks import fork
from server.domain.message_history import MessageHistoryService
from server.domain.runs import InputMessage, TurnRunner
from server.domain.runs.approvals import Approval
from server.domain.runs.live import LiveRuns, RunHandle
from server.domain.sessions import SessionService
from server.domain.transcripts import TranscriptService, unknown_format
from server.domain.turn_erasure import erase_turn
from server.store.message_history import SearchFilters

EXPORT_FORMATS = {
    pb.EXPORT_FORMAT_UNSPECIFIED: "openai_json",
    pb.EXPORT_FORMAT_OPENAI_JSON: "openai_json",
    pb.EXPORT_FORMAT_JSONL: "jsonl",
    pb.EXPORT_FORMAT_MARKDOWN: "markdown",
}


class SessionServicer(pb.SessionServiceServicer):
    """Serves ``agentapi.v1.SessionService``."""

    def __init__(
        self, sessions: SessionService, turns: TurnRunner, transcripts: TranscriptService, live: LiveRuns
    ) -> None:
        self.sessions = sessions
        self.turns = turns
        self.transcripts = transcripts
        self.live = live
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
        response: type = pb.SendStreamingMessageResponse,
        background: bool = False,
        regenerate: str | None = None,
    ) -> RunHandle:
        """Starts the turn in a task of its own (server/domain/runs/live.py);
        a background turn is not bounded by the caller's deadline."""
        principal = current_principal()
        events = self.turns.run(
            principal,
            session_id,
            inputs,
            turn_options.from_proto(options),
            None if background else context.time_remaining(),
            inputs_path,
            approvals or (),
            regenerate,
        )
        encode = STREAMING if response is pb.SendStreamingMessageResponse else encoder(response)
        return self.live.run(principal.tenant_id, events, encode)

    async def SendMessage(
        self, request: pb.SendMessageRequest, context: grpc.aio.ServicerContext
    ) -> pb.SendMessageResponse:
        """Runs a turn and answers its stored reply; with ``background``,
        answers once the turn is accepted (inputs stored, reply IN_PROGRESS)."""
        response = pb.SendMessageResponse()
        inputs = [message_convert.input_message(m) for m in request.messages]
        handle = self._run(context, request.session_id, inputs, request.options, background=request.background)
        started = ""
        async with aclosing(relay(handle, pb.SendStreamingMessageResponse, request.background)) as events:
            async for event in events:
                kind = event.WhichOneof("event")
                if kind == "input_message":
                    response.input_messages.append(event.input_message)
                elif kind == "assistant_message":
                    response.message.CopyFrom(event.assistant_message)
                elif kind == "turn_started":
                    started = event.turn_started.message_id
                elif request.background:
                    break
        if request.background and not response.HasField("message") and started:
            reply = await self.live.message(current_principal(), request.session_id, started)
            response.message.CopyFrom(message_convert.message(reply))
        return response

    def SendStreamingMessage(
        self, request: pb.SendStreamingMessageRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.SendStreamingMessageResponse]:
        inputs = [message_convert.input_message(m) for m in request.messages]
        handle = self._run(context, request.session_id, inputs, request.options, background=request.background)
        keep = request.on_disconnect == pb.ON_DISCONNECT_CONTINUE or (
            request.background and request.on_disconnect != pb.ON_DISCONNECT_CANCEL
        )
        return relay(handle, pb.SendStreamingMessageResponse, keep)

    def SubmitToolOutputs(
        self, request: pb.SubmitToolOutputsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.SubmitToolOutputsResponse]:
        inputs = [
            InputMessage(role="tool", content=output.output, tool_call_id=output.tool_call_id)
            for output in request.tool_outputs
        ]
        approvals = [Approval(a.tool_call_id, a.approve, a.reason) for a in request.approvals]
        response = pb.SubmitToolOutputsResponse
        handle = self._run(context, request.session_id, inputs, request.options, "tool_outputs", approvals, response)
        return relay(handle, response, False)

    def RegenerateMessage(
        self, request: pb.RegenerateMessageRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.RegenerateMessageResponse]:
        response = pb.RegenerateMessageResponse
        handle = self._run(
            context, request.session_id, [], request.options, response=response, regenerate=request.message_id
        )
        return relay(handle, response, False)

    async def GetMessage(
        self, request: pb.GetMessageRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetMessageResponse:
        row = await self.live.message(current_principal(), request.session_id, request.message_id)
        return pb.GetMessageResponse(message=message_convert.message(row))

    async def StreamTurn(
        self, request: pb.StreamTurnRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.StreamTurnResponse]:
        events = self.live.follow(
            current_principal(), request.session_id, request.message_id, max(0, request.after_sequence_number)
        )
        ended = False
        try:
            async for sequence, event in events:
                reply = as_type(pb.StreamTurnResponse, event, sequence)
                ended = reply.HasField("assistant_message")
                yield reply
        except AgentAPIError:
            if not ended:  # a rejoined stream ends at its final event, which carries any error
                raise

    async def CancelTurn(
        self, request: pb.CancelTurnRequest, context: grpc.aio.ServicerContext
    ) -> pb.CancelTurnResponse:
        row = await self.live.cancel(current_principal(), request.session_id, request.message_id)
        return pb.CancelTurnResponse(message=message_convert.message(row))

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
        erased = await erase_turn(self.sessions.db, current_principal(), request.session_id, request.message_id)
        # The turn's event log and checkpoints hold its text too: flushed first, so none arrives after.
        await self.live.forget([m.id for m in erased])
        return pb.EraseTurnResponse(messages=[message_convert.message(m) for m in erased])
