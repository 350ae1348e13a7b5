# Generated from agentapi/_async by scripts/unasync_client.py. Do not edit.
"""A streamed turn: ``with client.sessions.stream(...) as turn``."""

from __future__ import annotations

from collections.abc import Iterator
from types import TracebackType
from typing import Any, Self

import grpc

from agentapi import v1 as pb
from agentapi._sync.transport import SyncTransport
from agentapi.errors import AgentAPIError, StreamInterruptedError, from_rpc_error

# Every event of a turn, from SendStreamingMessage and SubmitToolOutputs alike: the two
# responses share their fields and numbers, so both are read as SendStreamingMessageResponse.
TurnEvent = pb.SendStreamingMessageResponse


class TurnStream:
    """The events of one turn, read once.

    Use it as a context manager: leaving the block early cancels the call (the
    server then stores the reply CANCELLED). Iterate ``events`` for every event
    (``event.WhichOneof("event")`` is ``turn_started``, ``input_message``,
    ``delta``, ``tool_call_started``, ``tool_call_completed`` or
    ``assistant_message``), or ``text_stream`` for the reply's text only
    (``reasoning_stream`` for the model's reasoning, ``Delta.reasoning``); then
    ``final_message()`` is the stored assistant message.

    Raises (from iteration and ``final_message``):
        StreamInterruptedError: the connection dropped after the turn started.
            Rejoining from ``last_sequence_number`` needs the event log (issue 16);
            the stored reply can be read with ``client.messages.list``.
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
        """The last delta's sequence number received."""
        self.tool_calls: list[pb.ToolCall] = []
        """After the turn: the final message's tool calls the caller must answer (client tools, approvals)."""

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._final is None:
            self.cancel()

    def start(self) -> None:
        """Opens the call (``__aenter__`` does it). Raises the typed error when the turn cannot start."""
        if self._iterator is None:
            self._call, self._iterator = self._transport.open_stream(
                self._method, self._request, TurnEvent, self._idempotency_key
            )

    def cancel(self) -> None:
        """Cancels the turn's call; the server stores the reply CANCELLED. Safe to call twice."""
        if self._call is not None:
            self._call.cancel()

    @property
    def events(self) -> Iterator[TurnEvent]:
        """Every event of the turn, in order (see the class docstring)."""
        return self._events()

    def _events(self) -> Iterator[TurnEvent]:
        self.start()
        assert self._iterator is not None
        try:
            for event in self._iterator:
                kind = event.WhichOneof("event")
                if kind == "turn_started":
                    self.message_id, self.model = event.turn_started.message_id, event.turn_started.model
                elif kind == "delta":
                    self.last_sequence_number = event.delta.sequence_number
                elif kind == "assistant_message":
                    self._final = event.assistant_message
                    self.tool_calls = [c for c in event.assistant_message.tool_calls]
                yield event
        except grpc.RpcError as exc:
            raise self._typed(exc) from None

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
