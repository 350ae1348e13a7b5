"""A turn's events as stream messages: numbering, encoding, and what a
caller's disconnect does to the run (server/domain/runs/live.py drives it).

Every streaming turn RPC (SendStreamingMessage, SubmitToolOutputs,
RegenerateMessage) and StreamTurn send the same oneof with the same field
numbers, so a logged event (bytes) parses as any of them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

from agentapi import v1 as pb
from server.api import message_convert
from server.domain.runs import TurnEvent
from server.domain.runs.failures import SHUTDOWN_CANCEL
from server.domain.runs.live import RunHandle


def encoder(response: type) -> Callable[[TurnEvent, int], Any]:
    """(event, sequence number) -> a ``response`` message."""

    def encode(event: TurnEvent, sequence: int) -> Any:
        kind = event.kind
        if kind == "delta":
            return response(delta=message_convert.delta(event.delta), sequence_number=sequence)
        if kind == "started":
            return response(turn_started=message_convert.turn_started(event.message), sequence_number=sequence)
        if kind == "input":
            return response(input_message=message_convert.message(event.message), sequence_number=sequence)
        if kind == "tool_started":
            started = message_convert.tool_call_started(event.message, event.call)
            return response(tool_call_started=started, sequence_number=sequence)
        if kind == "tool_completed":
            return response(tool_call_completed=message_convert.message(event.message), sequence_number=sequence)
        return response(assistant_message=message_convert.message(event.message), sequence_number=sequence)

    return encode


STREAMING = encoder(pb.SendStreamingMessageResponse)


def as_type(response: type, event: Any, sequence: int = 0) -> Any:
    """``event`` (a stream message of any turn RPC, its bytes, or a
    synthesized :class:`TurnEvent`) as a ``response`` message."""
    if type(event) is response:
        return event
    if isinstance(event, bytes):
        return response.FromString(event)
    if isinstance(event, TurnEvent):
        return encoder(response)(event, sequence)
    return response.FromString(event.SerializeToString())


async def relay(handle: RunHandle, response: type, keep_running: bool) -> AsyncIterator[Any]:
    """The run's events as ``response`` messages, for the caller that started
    it. When the caller goes away first, the run is cancelled (stored
    CANCELLED, or SHUTTING_DOWN when the server's shutdown cancelled the
    call) unless ``keep_running``."""
    try:
        async for event in handle.follow(0):
            yield as_type(response, event)
    except (asyncio.CancelledError, GeneratorExit) as exc:
        if not keep_running and not handle.done:
            shutdown = isinstance(exc, asyncio.CancelledError) and SHUTDOWN_CANCEL in exc.args
            if handle.task is not None:
                handle.task.cancel(SHUTDOWN_CANCEL if shutdown else None)
            await handle.stopped()
        raise
