# Generated from agentapi/_async by scripts/unasync_client.py. Do not edit.
"""A streamed turn: ``with client.sessions.stream(...) as turn``."""

from __future__ import annotations

from collections.abc import Iterator
from types import TracebackType
from typing import Any, Self

import grpc

from agentapi import v1 as pb
from agentapi._sync.transport import SyncTransport
from agentapi._retry import Safety
from agentapi.errors import AgentAPIError, StreamInterruptedError, from_rpc_error

# Every event of a turn, from SendStreamingMessage and SubmitToolOutputs alike: the two
# responses share their fields and numbers, so both are read as SendStreamingMessageResponse.
TurnEvent = pb.SendStreamingMessageResponse
# Rejoins of one turn after dropped connections before the stream gives up.
MAX_REJOINS = 5


class TurnStream:
    """The events of one turn, read once.

    Use it as a context manager: leaving the block early cancels the turn
    (CancelTurn; the server stores the reply CANCELLED with its partial text).
    A connection that drops mid-turn is rejoined on its own (StreamTurn, from
    the last event's ``sequence_number``), up to ``MAX_REJOINS`` times: the
    turn was started with ``on_disconnect`` CONTINUE, so it ran on meanwhile,
    and no event is lost or repeated. Iterate ``events`` for every event
    (``event.WhichOneof("event")`` is ``turn_started``, ``input_message``,
    ``delta``, ``tool_call_started``, ``tool_call_completed`` or
    ``assistant_message``), or ``text_stream`` for the reply's text only
    (``reasoning_stream`` for the model's reasoning, ``Delta.reasoning``); then
    ``final_message()`` is the stored assistant message.

    Raises (from iteration and ``final_message``):
        StreamInterruptedError: the connection dropped after the turn started,
            and rejoining failed ``MAX_REJOINS`` times; ``message_id`` and
            ``last_sequence_number`` say where to rejoin later
            (``client.sessions.rejoin``).
        AgentAPIError: the turn failed; its typed error (after the FAILED
            ``assistant_message`` event).
    """

    def __init__(self, transport: SyncTransport, method: str, request: Any, idempotency_key: str | None) -> None:
        self._transport = transport
        self._method = method
        self._request = request
        self._idempotency_key = idempotency_key
        self._call: Any = None
        self._iterator: Iterator[TurnEvent] | None = None
        self._final: pb.Message | None = None
        self.message_id = ""
        """The assistant message's id, from ``turn_started``."""
        self.model = ""
        """The model answering, from ``turn_started``."""
        self.last_sequence_number = 0
        """The last event's ``sequence_number`` received (where a rejoin starts)."""
        self.rejoins = 0
        """How many times the stream was rejoined after a dropped connection."""
        self._cancelled = False
        self.tool_calls: list[pb.ToolCall] = []
        """After the turn: the final message's tool calls the caller must answer (client tools, approvals)."""

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._final is None and not isinstance(exc, StreamInterruptedError):  # that one may be rejoined later
            if exc is None:
                self.cancel_turn()
            else:  # best effort: the block's own error is the one to raise
                try:
                    self.cancel_turn()
                except AgentAPIError:
                    pass

    def start(self) -> None:
        """Opens the call (``__aenter__`` does it). Raises the typed error when the turn cannot start."""
        if self._iterator is None:
            self._call, self._iterator = self._transport.open_stream(
                self._method, self._request, TurnEvent, self._idempotency_key
            )

    def cancel(self) -> None:
        """Cancels the turn's call and stops rejoining; leaving the ``with``
        block then cancels the turn itself (the run goes on after a dropped
        call). Safe to call twice."""
        self._cancelled = True
        if self._call is not None:
            self._call.cancel()

    def cancel_turn(self) -> pb.Message | None:
        """Cancels the turn on the server (CancelTurn), wherever it runs; its
        stored reply (CANCELLED, or as it ended), or None before it started."""
        self.cancel()
        if not self.message_id:
            return None
        request = pb.CancelTurnRequest(session_id=self._request.session_id, message_id=self.message_id)
        # Cancelling twice answers the same: safe to retry like a read.
        reply = self._transport.unary(
            self._method.rsplit("/", 1)[0] + "/CancelTurn", request, pb.CancelTurnResponse, Safety.READ
        )
        return reply.message

    @property
    def events(self) -> Iterator[TurnEvent]:
        """Every event of the turn, in order (see the class docstring)."""
        return self._events()

    def _events(self) -> Iterator[TurnEvent]:
        self.start()
        assert self._iterator is not None
        while True:
            try:
                for event in self._iterator:
                    if event.sequence_number and event.sequence_number <= self.last_sequence_number:
                        continue  # already seen before the connection dropped
                    self.last_sequence_number = event.sequence_number or self.last_sequence_number
                    kind = event.WhichOneof("event")
                    if kind == "turn_started":
                        self.message_id, self.model = event.turn_started.message_id, event.turn_started.model
                    elif kind == "assistant_message":
                        self._final = event.assistant_message
                        self.tool_calls = [c for c in event.assistant_message.tool_calls]
                    yield event
                return
            except grpc.RpcError as exc:
                error = self._typed(exc)
            if not isinstance(error, StreamInterruptedError) or self._cancelled or self.rejoins >= MAX_REJOINS:
                raise error
            if not self.message_id:
                raise error
            self.rejoins += 1
            try:
                self._rejoin()
            except AgentAPIError:
                raise error from None

    def _rejoin(self) -> None:
        """Reopens the turn's stream after the last event received (StreamTurn)."""
        request = pb.StreamTurnRequest(
            session_id=self._request.session_id,
            message_id=self.message_id,
            after_sequence_number=self.last_sequence_number,
        )
        method = self._method.rsplit("/", 1)[0] + "/StreamTurn"
        # StreamTurn's events share the turn events' fields and numbers.
        self._call, self._iterator = self._transport.open_stream(method, request, TurnEvent, None)

    def _typed(self, exc: grpc.RpcError) -> AgentAPIError:
        error = from_rpc_error(exc)
        if error.code == grpc.StatusCode.UNAVAILABLE and not error.reason and self._final is None:
            dropped = StreamInterruptedError(error.code, "", f"the connection dropped during the turn: {error.message}")
            dropped.message_id, dropped.last_sequence_number = self.message_id, self.last_sequence_number
            return dropped
        return error

    @property
    def text_stream(self) -> Iterator[str]:
        """The reply's text, delta by delta (tool-call fragments and other events skipped)."""
        return self._text()

    def _text(self) -> Iterator[str]:
        for event in self.events:
            if event.WhichOneof("event") == "delta" and event.delta.content:
                yield event.delta.content

    @property
    def reasoning_stream(self) -> Iterator[str]:
        """The model's reasoning, delta by delta (when the model reasons: ``reasoning_effort``)."""
        return self._reasoning()

    def _reasoning(self) -> Iterator[str]:
        for event in self.events:
            if event.WhichOneof("event") == "delta" and event.delta.reasoning:
                yield event.delta.reasoning

    def final_message(self) -> pb.Message:
        """Reads the rest of the turn; the stored assistant message.

        Its ``status`` is COMPLETED, or REQUIRES_ACTION with ``tool_calls`` to
        answer through ``client.sessions.submit_tool_outputs_stream``.
        """
        for _ in self.events:
            pass
        if self._final is None:
            raise StreamInterruptedError(grpc.StatusCode.UNAVAILABLE, "", "the stream ended without a final message")
        return self._final
