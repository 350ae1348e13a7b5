"""OpenAI ``POST /v1/chat/completions``, from the body to the response: validate,
open or continue a session, run the turn over gRPC, answer JSON or SSE."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from typing import Any

import grpc
from sse_starlette import EventSourceResponse
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from agentapi import v1 as pb
from gateway.bridge import Bridge, call_metadata, idempotency_key
from gateway.errors import ApiError, error_response, from_rpc_error, from_status, openai_error
from gateway.openai import chat_convert as convert
from gateway.openai.chat_schema import ChatCompletionRequest

SESSION_HEADER = "X-Session-Id"
_UNFINISHED = (pb.MESSAGE_STATUS_FAILED, pb.MESSAGE_STATUS_CANCELLED)


def session_idempotency_key(key: str) -> str:
    """The key of the CreateSession that a keyed chat completion makes first:
    derived, so that the turn itself keeps the caller's key and a retry finds
    both the same session and the same turn."""
    return f"chat-completion-session:{hashlib.sha256(key.encode()).hexdigest()}"


async def _open_session(
    bridge: Bridge, request: Request, body: ChatCompletionRequest, key: str | None
) -> tuple[str, bool]:
    """The session to use: the ``X-Session-Id`` one, or a new one for
    ``model`` (a plain model, or ``agent:<key>``). Returns (id, created)."""
    existing = request.headers.get(SESSION_HEADER, "").strip()
    if existing:
        return existing, False
    model = convert.check_model(body.model)
    session = pb.Session()
    if model.startswith(convert.AGENT_PREFIX):
        session.agent_id = model[len(convert.AGENT_PREFIX) :]
    else:
        session.overrides.model = model
        session.overrides.tools.extend(convert.tools(body.tools))
    metadata = call_metadata(request, None if key is None else session_idempotency_key(key))
    created = await bridge.sessions.CreateSession(pb.CreateSessionRequest(session=session), metadata=metadata)
    return created.session.id, True


async def chat_completions(request: Request) -> Response:
    """OpenAI ``POST /v1/chat/completions``; every call is stored as a session
    whose id comes back in ``X-Session-Id``. With that header, the call
    continues the stored session: ``messages`` may hold only the new ones, or
    the whole conversation as the SDKs resend it (then only the messages after
    its last assistant message are taken as new), and ``model`` and ``tools``
    apply to this turn. An ``Idempotency-Key`` makes a retry replay the stored
    turn, with the same id.

    The body is validated before anything is created (a 400 names the field in
    ``param``); every parameter goes to the turn's TurnOptions, unknown ones as
    ``extra_body``. The response's ``model`` is the model that answered."""
    bridge: Bridge = request.app.state.bridge
    headers: dict[str, str] = {}
    try:
        key = idempotency_key(request)
        body = convert.parse_request(await request.body())
        continuing = bool(request.headers.get(SESSION_HEADER, "").strip())
        messages = [convert.input_message(m) for m in body.messages]
        options = convert.turn_options(body, continuing)
        options.routing_mode = convert.routing_mode(request.headers.get(convert.ROUTING_HEADER))
        if not continuing:
            convert.check_model(body.model)
    except ApiError as exc:
        # A malformed body never reaches the server, which is what checks keys:
        # answer a bad key with 401 before a 400, as OpenAI does.
        return error_response(await _key_error(bridge, request) or exc)
    session_id, created = "", False
    try:
        session_id, created = await _open_session(bridge, request, body, key)
        headers[SESSION_HEADER] = session_id
        metadata = call_metadata(request, key)
        model = body.model or ""
        if not created and await _ends_at_last_user_message(bridge, request, session_id, messages):
            call = bridge.sessions.RegenerateMessage(
                pb.RegenerateMessageRequest(session_id=session_id, options=options), metadata=metadata
            )
            if body.stream:
                include_usage = bool(body.stream_options and body.stream_options.include_usage)
                return await _stream_response(call, convert.ChunkWriter(model, include_usage), headers)
            final = [event async for event in call][-1].assistant_message
            return JSONResponse(convert.completion(final, model), headers=headers)
        if not created:
            messages = convert.after_last_reply(messages)
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            call = bridge.sessions.SendStreamingMessage(
                pb.SendStreamingMessageRequest(session_id=session_id, messages=messages, options=options),
                metadata=metadata,
            )
            response = await _stream_response(call, convert.ChunkWriter(model, include_usage), headers)
            if created and response.status_code >= 400:
                await _discard(bridge, request, session_id, key, headers)
                if SESSION_HEADER not in headers and SESSION_HEADER in response.headers:
                    del response.headers[SESSION_HEADER]
            return response
        reply = await bridge.sessions.SendMessage(
            pb.SendMessageRequest(session_id=session_id, messages=messages, options=options), metadata=metadata
        )
        return JSONResponse(convert.completion(reply.message, model), headers=headers)
    except grpc.aio.AioRpcError as exc:
        if created:
            await _discard(bridge, request, session_id, key, headers)
        return error_response(from_rpc_error(exc), headers)
    except ApiError as exc:
        return error_response(exc, headers)


async def _discard(bridge: Bridge, request: Request, session_id: str, key: str | None, headers: dict[str, str]) -> None:
    """Deletes the session (and conversation) this request created when its
    turn was refused with nothing stored, so a refused request leaves nothing
    behind. Not for a keyed request: a retry with the same key is answered
    from the idempotency record, which names that session."""
    if key is not None:
        return
    try:
        await bridge.sessions.DeleteSession(
            pb.DeleteSessionRequest(session_id=session_id), metadata=call_metadata(request)
        )
    except grpc.aio.AioRpcError:
        return  # SESSION_NOT_EMPTY: the turn stored its failure, and the session stays with it
    headers.pop(SESSION_HEADER, None)


async def _ends_at_last_user_message(
    bridge: Bridge, request: Request, session_id: str, messages: list[pb.InputMessage]
) -> bool:
    """Whether a continuing request resends the session exactly up to its last
    user message (as many user messages as are stored, the last one the same
    text): OpenAI-style callers ask for another answer that way, so the turn
    is regenerated rather than the question stored again."""
    if not messages or messages[-1].role != pb.ROLE_USER:
        return False
    stored: list[pb.Message] = []
    token = ""
    while True:
        page = await bridge.sessions.ListMessages(
            pb.ListMessagesRequest(session_id=session_id, filter='role = "user"', page_size=100, page_token=token),
            metadata=call_metadata(request),
        )
        stored.extend(page.messages)
        token = page.next_page_token
        if not token:
            break
    sent = [m for m in messages if m.role == pb.ROLE_USER]
    return bool(stored) and len(sent) == len(stored) and sent[-1].content == stored[-1].content


async def _key_error(bridge: Bridge, request: Request) -> ApiError | None:
    """The 401 for a missing or wrong key, via a cheap authenticated call; None when the key is good."""
    try:
        await bridge.models.ListModels(pb.ListModelsRequest(), metadata=call_metadata(request))
    except grpc.aio.AioRpcError as exc:
        if exc.code() == grpc.StatusCode.UNAUTHENTICATED:
            return from_rpc_error(exc)
    return None


def _message_error(message: pb.Message) -> ApiError:
    """The error of a failed or cancelled reply, from its stored status."""
    if message.HasField("error") and message.error.code:
        return from_status(message.error)
    return ApiError(502, openai_error(502, "the turn did not complete", "TURN_FAILED"))


async def _stream_response(call: Any, writer: convert.ChunkWriter, headers: dict[str, str]) -> Response:
    """Reads the turn up to its first delta before answering, so an upstream
    failure before any output still gets a proper HTTP status, and the first
    chunk already has the reply's id (TurnStarted comes first). A failure
    after that ends the stream with OpenAI's error chunk, then ``[DONE]``."""
    buffered: list[pb.SendStreamingMessageResponse] = []
    try:
        while True:
            event = await call.read()
            if event is grpc.aio.EOF:
                break
            buffered.append(event)
            if event.HasField("delta"):
                break
            if event.HasField("assistant_message"):
                if event.assistant_message.status in _UNFINISHED:
                    await call.read()  # raises the typed status the call ends with
                    return error_response(_message_error(event.assistant_message), headers)
                break
    except grpc.aio.AioRpcError as exc:
        return error_response(from_rpc_error(exc), headers)

    async def events() -> AsyncIterator[dict[str, str]]:
        failed: list[pb.Message] = []
        try:
            for event in buffered:
                for data in _chunks(event, writer, failed):
                    yield {"data": data}
            while (event := await call.read()) is not grpc.aio.EOF:
                for data in _chunks(event, writer, failed):
                    yield {"data": data}
            if failed:  # the call ended without its status: never a silent success
                yield {"data": json.dumps(_message_error(failed[0]).body)}
        except grpc.aio.AioRpcError as exc:
            yield {"data": json.dumps(from_rpc_error(exc).body)}
        finally:
            call.cancel()  # no-op when the call ended; closes the turn when the client left
        yield {"data": "[DONE]"}

    return EventSourceResponse(events(), headers=headers, sep="\n", ping=15)


def _chunks(event: pb.SendStreamingMessageResponse, writer: convert.ChunkWriter, failed: list[pb.Message]) -> list[str]:
    """The SSE data for one event; a failed or cancelled reply gets no finishing
    chunk (the error chunk follows) and is appended to ``failed``."""
    kind = event.WhichOneof("event")
    if kind == "turn_started":
        writer.started(event.turn_started)
        return []
    if kind == "delta":
        return [writer.delta(event.delta)]
    if kind == "assistant_message":
        if event.assistant_message.status in _UNFINISHED:
            failed.append(event.assistant_message)
            return []
        return writer.final(event.assistant_message)
    return []  # input messages: already the caller's
