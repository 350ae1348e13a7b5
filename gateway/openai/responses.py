"""OpenAI ``/v1/responses``, from the body to the response: validate, find or
open the session (``previous_response_id``, ``conversation`` or a new one),
run the turn over gRPC, answer JSON or SSE; and retrieve, stream again,
cancel, delete and list the input items of a stored response.

A response is one agentapi turn (gateway/openai/responses_convert.py has the
id mapping). ``previous_response_id`` continues the session of that response
when it is the session's last turn, else a fork of the session at it
(ForkSession), so a chain may branch. ``instructions`` are the turn's
system message, hidden once the turn ends (see :func:`after_turn`).
``store: false`` runs the turn, then erases it (EraseTurn): the usage stays,
and the response can be neither retrieved nor continued. A streaming caller
that leaves mid-turn does not stop that: the tidying runs in a task of its
own once the cancelled turn has ended (:func:`tidy_later`).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import grpc
from sse_starlette import EventSourceResponse
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from agentapi import v1 as pb
from gateway.bridge import Bridge, call_metadata, idempotency_key
from gateway.errors import ApiError, bad_request, error_response, from_rpc_error
from gateway.openai import responses_convert as convert
from gateway.openai import responses_ids as ids
from gateway.openai import responses_request as request_convert
from gateway.openai.responses_schema import ResponseRequest
from gateway.openai.responses_state import (
    after_turn,
    all_messages,
    check_mcp_tools,
    find_turn,
    open_session,
    previous,
    stored,
    tidy_later,
)
from gateway.openai.responses_stream import ResponseEvents


def _check(body: ResponseRequest) -> None:
    if body.previous_response_id and body.conversation is not None:
        raise bad_request("previous_response_id and conversation cannot be used together", "conversation")
    if body.background and body.store is False:
        raise bad_request("background responses must be stored (store: false)", "store")


def _check_approvals(body: ResponseRequest, messages: list[pb.InputMessage]) -> None:
    """An ``mcp_approval_response`` continues the turn of ``previous_response_id``
    (SubmitToolOutputs), with nothing else but function call outputs."""
    if not body.previous_response_id:
        raise bad_request("mcp_approval_response items need previous_response_id", "previous_response_id")
    if body.background:
        raise bad_request("mcp_approval_response items cannot run in the background yet", "background")
    if any(m.role != pb.ROLE_TOOL for m in messages):
        raise bad_request("mcp_approval_response items go with function_call_output items only", "input")


async def create_response(request: Request) -> Response:
    """OpenAI ``POST /v1/responses``."""
    bridge: Bridge = request.app.state.bridge
    try:
        key = idempotency_key(request)
        body: ResponseRequest = request_convert.parse(ResponseRequest, await request.body())
        _check(body)
        await check_mcp_tools(bridge, request, body)
        messages, approvals = request_convert.input_messages(body)
        if approvals:
            _check_approvals(body, messages)
        options = request_convert.turn_options(body)
        session_id, previous = await open_session(bridge, request, body, key)
    except ApiError as exc:
        return error_response(exc)
    except grpc.aio.AioRpcError as exc:
        return error_response(from_rpc_error(exc))
    store = body.store is not False
    meta = {
        "previous_response_id": previous,
        "instructions": body.instructions,
        "store": store,
        "background": bool(body.background),
    }
    metadata = call_metadata(request, key)
    if body.stream and approvals:
        outputs = [pb.ToolOutput(tool_call_id=m.tool_call_id, output=m.content) for m in messages]
        submitted = bridge.sessions.SubmitToolOutputs(
            pb.SubmitToolOutputsRequest(
                session_id=session_id, tool_outputs=outputs, approvals=approvals, options=options
            ),
            metadata=metadata,
        )
        machine = ResponseEvents(session_id, body.model or "", options, meta)
        try:
            machine.calls = convert.tool_calls_by_id(await all_messages(bridge, request, session_id))
            call = await _with_turn_id(bridge, request, session_id, submitted)
        except grpc.aio.AioRpcError as exc:
            return error_response(from_rpc_error(exc))
        return await stream_response(call, machine, -1, (bridge, request, session_id, store))
    if body.stream:
        call = bridge.sessions.SendStreamingMessage(
            pb.SendStreamingMessageRequest(
                session_id=session_id,
                messages=messages,
                options=options,
                background=bool(body.background),
                on_disconnect=pb.ON_DISCONNECT_CONTINUE if body.background else pb.ON_DISCONNECT_CANCEL,
            ),
            metadata=metadata,
        )
        machine = ResponseEvents(session_id, body.model or "", options, meta)
        return await stream_response(call, machine, -1, (bridge, request, session_id, store))
    try:
        if approvals:
            outputs = [pb.ToolOutput(tool_call_id=m.tool_call_id, output=m.content) for m in messages]
            submitted = bridge.sessions.SubmitToolOutputs(
                pb.SubmitToolOutputsRequest(
                    session_id=session_id, tool_outputs=outputs, approvals=approvals, options=options
                ),
                metadata=metadata,
            )
            message = [event async for event in submitted][-1].assistant_message
        else:
            reply = await bridge.sessions.SendMessage(
                pb.SendMessageRequest(
                    session_id=session_id, messages=messages, options=options, background=bool(body.background)
                ),
                metadata=metadata,
            )
            message = reply.message
        rows = await all_messages(bridge, request, session_id)
        turns = convert.turns(rows)
        turn = next((t for t in turns if message.id in (t[1][0].id, t[1][-1].id)), ([], [message]))
        created = turn[1][0].create_time.seconds
        result = convert.response(
            session_id,
            message,
            convert.turn_output_items(turn, convert.tool_calls_by_id(rows)),
            convert.usage(message) if message.status != pb.MESSAGE_STATUS_IN_PROGRESS else None,
            requested_model=body.model or "",
            created_at=created,
            turn_id=turn[1][0].id,
            **meta,
        )
        if message.status != pb.MESSAGE_STATUS_IN_PROGRESS:
            await after_turn(bridge, request, session_id, turn[1][0].id, store)
        return JSONResponse(result)
    except grpc.aio.AioRpcError as exc:
        return error_response(from_rpc_error(exc))


class _Replayed:
    """A call's events read ahead, then the rest of the call: for :func:`stream_response`."""

    def __init__(self, call: Any, events: list[Any]) -> None:
        self.call, self.events = call, events

    async def read(self) -> Any:
        return self.events.pop(0) if self.events else await self.call.read()

    def cancel(self) -> None:
        self.call.cancel()


async def _with_turn_id(bridge: Bridge, request: Request, session_id: str, call: Any) -> Any:
    """A continued turn's events with the turn's id in ``turn_started``. A
    server that does not send it yet (SubmitToolOutputs before issue 16) gets
    its turn read whole first, and the id taken from the stored turn: the
    events are then the same, only not incremental."""
    first = await call.read()
    if first is grpc.aio.EOF or first.turn_started.message_id:
        return _Replayed(call, [first])
    events = [first]
    while (event := await call.read()) is not grpc.aio.EOF:
        events.append(event)
    final = next((e.assistant_message for e in reversed(events) if e.HasField("assistant_message")), None)
    if final is not None:
        turns = convert.turns(await all_messages(bridge, request, session_id))
        turn = next((t for t in turns if final.id in (t[1][0].id, t[1][-1].id)), ([], [final]))
        first.turn_started.message_id = turn[1][0].id
        first.turn_started.create_time.CopyFrom(turn[1][0].create_time)
        first.turn_started.model = first.turn_started.model or final.model
    return _Replayed(call, events)


async def stream_response(
    call: Any,
    machine: ResponseEvents,
    starting_after: int,
    ending: tuple[Bridge, Request, str, bool] | None = None,
) -> Response:
    """SSE of a turn's events as Responses events, each with ``event:`` its
    type, then ``[DONE]``. The events up to ``starting_after`` (a sequence
    number, replaying) are dropped. The turn is read up to its first event
    before answering, so a refusal still gets its HTTP status."""
    try:
        first = await call.read()
    except grpc.aio.AioRpcError as exc:
        return error_response(from_rpc_error(exc))

    def sse(events: list[dict[str, Any]]) -> list[dict[str, str]]:
        return [
            {"event": e["type"], "data": json.dumps(e, separators=(",", ":"))}
            for e in events
            if e["sequence_number"] > starting_after
        ]

    async def events() -> AsyncIterator[dict[str, str]]:
        try:
            event = first
            while event is not grpc.aio.EOF:
                kind = event.WhichOneof("event")
                for item in sse(machine.event(kind, getattr(event, kind) if kind else None)):
                    yield item
                event = await call.read()
        except grpc.aio.AioRpcError as exc:
            for item in sse([machine.error(from_rpc_error(exc).body)]):
                yield item
        except BaseException:
            # The caller left (or the relay broke) mid-turn: the turn is being
            # cancelled; what it leaves is tidied once it has ended.
            call.cancel()
            if ending is not None and machine.reply_id and not machine.meta.get("background"):
                tidy_later(*ending[:3], machine.reply_id, ending[3])
            raise
        call.cancel()  # a no-op when the call ended
        if ending is not None and machine.finished and not machine.meta.get("background"):
            bridge, request, session_id, store = ending
            try:
                await after_turn(bridge, request, session_id, machine.reply_id, store)
            except grpc.aio.AioRpcError:  # the stream is over: tidy in the background instead
                tidy_later(bridge, request, session_id, machine.reply_id, store)
        yield {"data": "[DONE]"}

    return EventSourceResponse(events(), sep="\n", ping=15)


async def get_response(request: Request) -> Response:
    """``GET /v1/responses/{id}``; with ``?stream=true`` the turn's events
    again from its event log (StreamTurn), after ``starting_after``."""
    bridge: Bridge = request.app.state.bridge
    response_id = request.path_params["response_id"]
    try:
        session_id, turns, index = await find_turn(bridge, request, response_id)
        if request.query_params.get("stream", "").lower() not in ("true", "1"):
            return JSONResponse(stored(session_id, turns, index))
        try:
            starting_after = int(request.query_params.get("starting_after", "-1"))
        except ValueError:
            raise bad_request("starting_after must be an integer", "starting_after") from None
        inputs, outputs = turns[index]
        reply = outputs[-1]
        turn_id = outputs[0].id
        meta = {
            "previous_response_id": previous(session_id, turns, index),
            "instructions": next((m.content for m in inputs if convert.is_instructions(m)), None),
        }
        machine = ResponseEvents(session_id, reply.model, reply.options, meta)
        machine.calls = convert.tool_calls_by_id([row for turn in turns[:index] for row in turn[1]])
        call = bridge.sessions.StreamTurn(
            pb.StreamTurnRequest(session_id=session_id, message_id=turn_id, after_sequence_number=0),
            metadata=call_metadata(request),
        )
        return await stream_response(call, machine, starting_after)
    except ApiError as exc:
        return error_response(exc)
    except grpc.aio.AioRpcError as exc:
        return error_response(from_rpc_error(exc))


async def delete_response(request: Request) -> Response:
    """``DELETE /v1/responses/{id}``: hides the turn's messages (DeleteMessage)."""
    bridge: Bridge = request.app.state.bridge
    response_id = request.path_params["response_id"]
    try:
        session_id, turns, index = await find_turn(bridge, request, response_id)
        for row in reversed(turns[index][0] + turns[index][1]):
            try:
                await bridge.sessions.DeleteMessage(
                    pb.DeleteMessageRequest(session_id=session_id, message_id=row.id), metadata=call_metadata(request)
                )
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.NOT_FOUND:
                    raise
        return JSONResponse({"id": response_id, "object": "response", "deleted": True})
    except ApiError as exc:
        return error_response(exc)
    except grpc.aio.AioRpcError as exc:
        return error_response(from_rpc_error(exc))


async def cancel_response(request: Request) -> Response:
    """``POST /v1/responses/{id}/cancel``: CancelTurn, then the response as stored."""
    bridge: Bridge = request.app.state.bridge
    response_id = request.path_params["response_id"]
    try:
        session_id, reply_id = ids.parse_response_id(response_id)
        await bridge.sessions.CancelTurn(
            pb.CancelTurnRequest(session_id=session_id, message_id=reply_id), metadata=call_metadata(request)
        )
        session_id, turns, index = await find_turn(bridge, request, response_id)
        return JSONResponse(stored(session_id, turns, index))
    except ApiError as exc:
        return error_response(exc)
    except grpc.aio.AioRpcError as exc:
        return error_response(from_rpc_error(exc))


def page(items: list[dict[str, Any]], request: Request, default_order: str = "desc") -> dict[str, Any]:
    """OpenAI's cursor page of ``items`` (in ascending order): ``after`` (an
    item id), ``limit`` (1 to 100, default 20), ``order`` (``asc``/``desc``).
    Raises a 400 :class:`ApiError`."""
    query = request.query_params
    order = query.get("order", default_order)
    if order not in ("asc", "desc"):
        raise bad_request("order must be asc or desc", "order")
    try:
        limit = int(query.get("limit", "20"))
    except ValueError:
        raise bad_request("limit must be an integer", "limit") from None
    if not 1 <= limit <= 100:
        raise bad_request("limit must be between 1 and 100", "limit")
    ordered = items if order == "asc" else list(reversed(items))
    if after := query.get("after"):
        ids = [item["id"] for item in ordered]
        if after not in ids:
            raise bad_request(f"no item with id '{after}'", "after")
        ordered = ordered[ids.index(after) + 1 :]
    data = ordered[:limit]
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": len(ordered) > limit,
    }


async def list_input_items(request: Request) -> Response:
    """``GET /v1/responses/{id}/input_items``: the turn's inputs (not its instructions)."""
    bridge: Bridge = request.app.state.bridge
    try:
        _, turns, index = await find_turn(bridge, request, request.path_params["response_id"])
        items = [
            item for row in turns[index][0] if not convert.is_instructions(row) for item in convert.input_item(row)
        ]
        return JSONResponse(page(items, request))
    except ApiError as exc:
        return error_response(exc)
    except grpc.aio.AioRpcError as exc:
        return error_response(from_rpc_error(exc))


async def count_input_tokens(request: Request) -> Response:
    """``POST /v1/responses/input_tokens``: counted as agentapi counts a prompt
    (see :func:`request_convert.input_tokens`)."""
    try:
        body: ResponseRequest = request_convert.parse(ResponseRequest, await request.body())
        counted = request_convert.input_tokens(body)
    except ApiError as exc:
        return error_response(exc)
    return JSONResponse({"object": "response.input_tokens", "input_tokens": counted})
