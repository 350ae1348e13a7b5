"""Sessions (turns, streams, tool outputs, export) and their messages."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from typing import Any

from agentapi import v1 as pb
from agentapi._async.base import AsyncResource, build
from agentapi._async.streaming import AsyncTurnStream
from agentapi._retry import Safety

# What a turn's input may be: a text (one user message), one InputMessage, or several.
Input = str | pb.InputMessage | Sequence[pb.InputMessage]

EXPORT_FORMATS = {
    "openai": pb.EXPORT_FORMAT_OPENAI_JSON,
    "jsonl": pb.EXPORT_FORMAT_JSONL,
    "md": pb.EXPORT_FORMAT_MARKDOWN,
}


def input_messages(messages: Input) -> list[pb.InputMessage]:
    """The turn's input messages: a ``str`` is one user message."""
    if isinstance(messages, str):
        return [pb.InputMessage(role=pb.ROLE_USER, content=messages)]
    if isinstance(messages, pb.InputMessage):
        return [messages]
    return list(messages)


def tool_outputs(outputs: Mapping[str, str] | Iterable[pb.ToolOutput]) -> list[pb.ToolOutput]:
    """``{tool_call_id: output}`` or ToolOutput messages."""
    if isinstance(outputs, Mapping):
        return [pb.ToolOutput(tool_call_id=k, output=v) for k, v in outputs.items()]
    return list(outputs)


class AsyncSessions(AsyncResource):
    """SessionService: a session is one run of an agent (or a plain model) in a conversation."""

    _service = "SessionService"

    async def create(
        self,
        session: pb.Session | None = None,
        *,
        carry_forward_history: bool = False,
        idempotency_key: str | None = None,
        **fields: Any,
    ) -> pb.Session:
        """Creates a session: ``agent_id`` (id or key), or ``overrides=pb.SessionSettings(model=...)``
        for a plain model; ``conversation_id`` to join one (else a conversation is made).

        Raises:
            NotFoundError: the agent or conversation. InvalidArgumentError.
        """
        request = pb.CreateSessionRequest(
            session=build(pb.Session, session, fields), carry_forward_history=carry_forward_history
        )
        response = await self._call("CreateSession", request, pb.CreateSessionResponse, Safety.KEYED, idempotency_key)
        return response.session

    async def get(self, session_id: str) -> pb.Session:
        """The session. Raises NotFoundError."""
        return (
            await self._call("GetSession", pb.GetSessionRequest(session_id=session_id), pb.GetSessionResponse)
        ).session

    def list(self, conversation_id: str, *, page_size: int = 0) -> AsyncIterator[pb.Session]:
        """The sessions of a conversation, page after page."""
        request = pb.ListSessionsRequest(conversation_id=conversation_id, page_size=page_size)
        return self._items("ListSessions", request, pb.ListSessionsResponse, "sessions")

    def pages(self, conversation_id: str, *, page_size: int = 0) -> AsyncIterator[pb.ListSessionsResponse]:
        """The pages of ``list()``, whole."""
        request = pb.ListSessionsRequest(conversation_id=conversation_id, page_size=page_size)
        return self._pages("ListSessions", request, pb.ListSessionsResponse)

    async def send(
        self,
        session_id: str,
        messages: Input,
        *,
        options: pb.TurnOptions | None = None,
        idempotency_key: str | None = None,
    ) -> pb.SendMessageResponse:
        """Runs one turn and waits for it: ``.message`` is the stored assistant message
        (COMPLETED, or REQUIRES_ACTION with ``tool_calls``), ``.input_messages`` the stored inputs.

        One idempotency key (``idempotency_key``, else a new UUID) is sent with every
        attempt, so a retry after a lost reply answers the stored turn instead of running
        another.

        Raises:
            SessionBusyError, ToolOutputsPendingError, RateLimitedError, BudgetExceededError,
            UpstreamError (a failed turn), DeadlineExceededError (``timeout``), ...
        """
        request = pb.SendMessageRequest(session_id=session_id, messages=input_messages(messages), options=options)
        return await self._call("SendMessage", request, pb.SendMessageResponse, Safety.KEYED, idempotency_key)

    def stream(
        self,
        session_id: str,
        messages: Input,
        *,
        options: pb.TurnOptions | None = None,
        idempotency_key: str | None = None,
    ) -> AsyncTurnStream:
        """A streamed turn; use ``async with client.sessions.stream(id, "hi") as turn:``
        (see AsyncTurnStream). The call opens on entering the block, retried while no
        event arrived."""
        # The run goes on when the connection drops, so the stream can rejoin it.
        request = pb.SendStreamingMessageRequest(
            session_id=session_id,
            messages=input_messages(messages),
            options=options,
            on_disconnect=pb.ON_DISCONNECT_CONTINUE,
        )
        return AsyncTurnStream(self._transport, self._path("SendStreamingMessage"), request, idempotency_key)

    def rejoin(self, session_id: str, message_id: str, *, after_sequence_number: int = 0) -> AsyncTurnStream:
        """A turn's events after ``after_sequence_number`` (StreamTurn), then live
        to its end: ``message_id`` is the turn's (``turn.message_id``). Raises
        NotFoundError; FailedPreconditionError (EVENT_LOG_EXPIRED) for a turn
        whose log was purged."""
        request = pb.StreamTurnRequest(
            session_id=session_id, message_id=message_id, after_sequence_number=after_sequence_number
        )
        turn = AsyncTurnStream(self._transport, self._path("StreamTurn"), request, None)
        turn.message_id, turn.last_sequence_number = message_id, after_sequence_number
        return turn

    async def cancel_turn(self, session_id: str, message_id: str) -> pb.Message:
        """Cancels a running turn wherever it runs (CancelTurn): its stored reply,
        CANCELLED, or unchanged when it had ended. Raises NotFoundError."""
        request = pb.CancelTurnRequest(session_id=session_id, message_id=message_id)
        return (await self._call("CancelTurn", request, pb.CancelTurnResponse, Safety.READ)).message

    async def get_message(self, session_id: str, message_id: str) -> pb.Message:
        """One message; a running reply shows its status and text so far. Raises NotFoundError."""
        request = pb.GetMessageRequest(session_id=session_id, message_id=message_id)
        return (await self._call("GetMessage", request, pb.GetMessageResponse)).message

    def submit_tool_outputs_stream(
        self,
        session_id: str,
        outputs: Mapping[str, str] | Iterable[pb.ToolOutput] = (),
        *,
        approvals: Iterable[pb.ToolApproval] = (),
        options: pb.TurnOptions | None = None,
        idempotency_key: str | None = None,
    ) -> AsyncTurnStream:
        """Answers a REQUIRES_ACTION turn (client tool outputs by ``tool_call_id``, approvals) and
        streams the continued turn, with the same events as ``stream``."""
        request = pb.SubmitToolOutputsRequest(
            session_id=session_id, tool_outputs=tool_outputs(outputs), approvals=list(approvals), options=options
        )
        return AsyncTurnStream(self._transport, self._path("SubmitToolOutputs"), request, idempotency_key)

    async def submit_tool_outputs(
        self,
        session_id: str,
        outputs: Mapping[str, str] | Iterable[pb.ToolOutput] = (),
        *,
        approvals: Iterable[pb.ToolApproval] = (),
        options: pb.TurnOptions | None = None,
        idempotency_key: str | None = None,
    ) -> pb.Message:
        """``submit_tool_outputs_stream``, read to its end: the stored assistant message."""
        turn = self.submit_tool_outputs_stream(
            session_id, outputs, approvals=approvals, options=options, idempotency_key=idempotency_key
        )
        async with turn:
            return await turn.final_message()

    async def end(self, session_id: str) -> pb.Session:
        """Ends the session: no more turns."""
        request = pb.EndSessionRequest(session_id=session_id)
        return (await self._call("EndSession", request, pb.EndSessionResponse, Safety.UNSAFE)).session

    async def delete(self, session_id: str) -> pb.DeleteSessionResponse:
        """Deletes an empty session. Raises FailedPreconditionError (SESSION_NOT_EMPTY)."""
        request = pb.DeleteSessionRequest(session_id=session_id)
        return await self._call("DeleteSession", request, pb.DeleteSessionResponse, Safety.UNSAFE)

    async def export(self, session_id: str, *, format: str = "openai") -> pb.ExportSessionResponse:
        """The transcript: ``format`` is ``openai`` (OpenAI messages JSON), ``jsonl`` or ``md``;
        ``.content`` is the text, ``.content_type`` its media type."""
        if format not in EXPORT_FORMATS:
            raise ValueError(f"format must be one of {', '.join(EXPORT_FORMATS)}")
        request = pb.ExportSessionRequest(session_id=session_id, format=EXPORT_FORMATS[format])
        return await self._call("ExportSession", request, pb.ExportSessionResponse)

    async def replay(
        self, session_id: str, model: str, *, idempotency_key: str | None = None
    ) -> pb.ReplaySessionResponse:
        """Replays the session's user turns against ``model`` in a new session."""
        request = pb.ReplaySessionRequest(session_id=session_id, model=model)
        return await self._call("ReplaySession", request, pb.ReplaySessionResponse, Safety.KEYED, idempotency_key)

    def regenerate_stream(
        self,
        session_id: str,
        message_id: str = "",
        *,
        options: pb.TurnOptions | None = None,
        idempotency_key: str | None = None,
    ) -> AsyncTurnStream:
        """Runs the latest turn again on its stored inputs (``message_id``: its reply, checked
        when given); the old reply is superseded. Streams like ``stream``."""
        request = pb.RegenerateMessageRequest(session_id=session_id, message_id=message_id, options=options)
        return AsyncTurnStream(self._transport, self._path("RegenerateMessage"), request, idempotency_key)

    async def fork(
        self, session_id: str, message_id: str, *, edited_content: str = "", idempotency_key: str | None = None
    ) -> pb.ForkSessionResponse:
        """A new session that branches at ``message_id`` (with ``edited_content`` replacing that
        user message's text when given): ``.session`` and its copied ``.messages``."""
        request = pb.ForkSessionRequest(session_id=session_id, message_id=message_id, edited_content=edited_content)
        return await self._call("ForkSession", request, pb.ForkSessionResponse, Safety.KEYED, idempotency_key)


class AsyncMessages(AsyncResource):
    """A session's stored messages (SessionService.ListMessages)."""

    _service = "SessionService"

    def list(
        self, session_id: str, *, page_size: int = 0, filter: str = "", show_deleted: bool = False
    ) -> AsyncIterator[pb.Message]:
        """Every message of the session, oldest first, page after page (``filter``: AIP-160)."""
        request = pb.ListMessagesRequest(
            session_id=session_id, page_size=page_size, filter=filter, show_deleted=show_deleted
        )
        return self._items("ListMessages", request, pb.ListMessagesResponse, "messages")

    def pages(
        self, session_id: str, *, page_size: int = 0, filter: str = "", show_deleted: bool = False
    ) -> AsyncIterator[pb.ListMessagesResponse]:
        """The pages of ``list()``, whole."""
        request = pb.ListMessagesRequest(
            session_id=session_id, page_size=page_size, filter=filter, show_deleted=show_deleted
        )
        return self._pages("ListMessages", request, pb.ListMessagesResponse)

    async def delete(self, session_id: str, message_id: str, *, force: bool = False) -> pb.DeleteMessageResponse:
        """Soft-deletes a message with its tool-call group (``force``: erase, operators only);
        ``.messages`` are the messages deleted."""
        request = pb.DeleteMessageRequest(session_id=session_id, message_id=message_id, force=force)
        return await self._call("DeleteMessage", request, pb.DeleteMessageResponse, Safety.UNSAFE)

    def search(self, query: str, *, page_size: int = 0, **filters: Any) -> AsyncIterator[pb.MessageSearchResult]:
        """Full-text search over the tenant's messages, best first, page after page; ``filters``:
        ``conversation_id``, ``session_id``, ``agent_id``, ``role``, ``start_time``, ``end_time``."""
        request = pb.SearchMessagesRequest(query=query, page_size=page_size, **filters)
        return self._items("SearchMessages", request, pb.SearchMessagesResponse, "results")
