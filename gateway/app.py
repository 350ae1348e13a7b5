"""The JSON bridge: an ASGI app that serves OpenAI-style callers by calling the
gRPC server through the generated stubs.

Routes: ``POST /v1/chat/completions`` (JSON, or SSE with ``stream: true``),
``GET /v1/models``, ``GET /healthz``. Errors use OpenAI's body shape.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import AsyncIterator
from typing import Any

import grpc
from sse_starlette import EventSourceResponse
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from agentapi import v1 as pb
from gateway import openai_compat as oai
from gateway import openapi, transcode
from gateway.errors import IDEMPOTENCY_HEADER, ApiError, from_rpc_error, from_status, metadata_value, openai_error

SESSION_HEADER = "X-Session-Id"


class Bridge:
    """Holds the channel and stubs; one per app."""

    def __init__(self, grpc_target: str) -> None:
        self.grpc_target = grpc_target
        self.channel: grpc.aio.Channel | None = None

    async def open(self) -> None:
        """Opens the channel to the gRPC server."""
        self.channel = grpc.aio.insecure_channel(self.grpc_target)
        self.agents = pb.AgentServiceStub(self.channel)
        self.sessions = pb.SessionServiceStub(self.channel)
        self.models = pb.ModelServiceStub(self.channel)

    async def close(self) -> None:
        """Closes the channel."""
        if self.channel is not None:
            await self.channel.close()


def _metadata(request: Request) -> tuple[tuple[str, str], ...]:
    """Forwards the caller's key; the gRPC server authenticates it."""
    authorization = metadata_value("authorization", request.headers.get("authorization", ""))
    return (("authorization", authorization),) if authorization else ()


def _idempotency_key(request: Request) -> str | None:
    """The ``Idempotency-Key`` header, checked by the gRPC server (a 400 here
    only for one that gRPC metadata cannot carry)."""
    value = request.headers.get(IDEMPOTENCY_HEADER)
    return None if value is None else metadata_value(IDEMPOTENCY_HEADER, value)


def session_idempotency_key(key: str) -> str:
    """The key of the CreateSession that a keyed chat completion makes first:
    derived, so that the turn itself keeps the caller's key and a retry finds
    both the same session and the same turn."""
    return f"chat-completion-session:{hashlib.sha256(key.encode()).hexdigest()}"


def _error_response(error: ApiError, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error.body, status_code=error.http_status, headers={**error.headers, **(headers or {})})


async def _json_body(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.body())
    except ValueError as exc:
        raise oai.bad_request("the body is not valid JSON") from exc
    if not isinstance(body, dict):
        raise oai.bad_request("the body must be a JSON object")
    return body


async def _open_session(
    bridge: Bridge, request: Request, body: dict[str, Any], metadata: Any, key: str | None
) -> tuple[str, bool]:
    """The session to use: the ``X-Session-Id`` one, or a new one. Returns (id, created)."""
    existing = request.headers.get(SESSION_HEADER, "").strip()
    if existing:
        return existing, False
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise oai.bad_request("model is required", "model")
    session = pb.Session()
    if model.startswith(oai.AGENT_PREFIX):
        session.agent_id = model[len(oai.AGENT_PREFIX) :]
    else:
        session.overrides.model = model
        session.overrides.tools.extend(oai.tools(body.get("tools")))
    if key is not None:
        metadata = (*metadata, (IDEMPOTENCY_HEADER, session_idempotency_key(key)))
    created = await bridge.sessions.CreateSession(pb.CreateSessionRequest(session=session), metadata=metadata)
    return created.session.id, True


def _after_last_reply(messages: list[pb.InputMessage]) -> list[pb.InputMessage]:
    """The messages after the last assistant message. OpenAI SDK callers
    resend the whole conversation each call; the stored session already holds
    everything up to its last reply, so only what follows is new (for example
    the ``tool`` messages answering that reply's tool calls)."""
    for index in range(len(messages) - 1, -1, -1):
        if messages[index].role == pb.ROLE_ASSISTANT:
            return messages[index + 1 :]
    return messages


async def chat_completions(request: Request) -> Response:
    """OpenAI ``POST /v1/chat/completions``; every call is stored as a session
    whose id comes back in ``X-Session-Id``. With that header, the call
    continues the stored session: ``messages`` may hold only the new ones, or
    the whole conversation as the SDKs resend it (then only the messages after
    its last assistant message are taken as new).
    An ``Idempotency-Key`` makes a retry replay the stored turn."""
    bridge: Bridge = request.app.state.bridge
    metadata = _metadata(request)
    headers: dict[str, str] = {}
    try:
        key = _idempotency_key(request)
        body = await _json_body(request)
        messages = oai.input_messages(body.get("messages"))
        options = oai.turn_options(body)
        session_id, created = await _open_session(bridge, request, body, metadata, key)
        if not created:
            messages = _after_last_reply(messages)
        headers[SESSION_HEADER] = session_id
        model = str(body.get("model") or "")
        turn_metadata = metadata if key is None else (*metadata, (IDEMPOTENCY_HEADER, key))
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            call = bridge.sessions.SendStreamingMessage(
                pb.SendStreamingMessageRequest(session_id=session_id, messages=messages, options=options),
                metadata=turn_metadata,
            )
            return await _stream_response(call, oai.ChunkWriter(model, include_usage), headers)
        reply = await bridge.sessions.SendMessage(
            pb.SendMessageRequest(session_id=session_id, messages=messages, options=options), metadata=turn_metadata
        )
        return JSONResponse(oai.completion(reply.message, model), headers=headers)
    except grpc.aio.AioRpcError as exc:
        return _error_response(from_rpc_error(exc), headers)
    except ApiError as exc:
        # A malformed body never reached the server, which is what checks keys:
        # answer a bad key with 401 before a 400, as OpenAI does.
        auth_error = await _key_error(bridge, metadata)
        return _error_response(auth_error or exc, headers)


async def _key_error(bridge: Bridge, metadata: Any) -> ApiError | None:
    """The 401 for a missing or wrong key, via a cheap authenticated call; None when the key is good."""
    try:
        await bridge.models.ListModels(pb.ListModelsRequest(), metadata=metadata)
    except grpc.aio.AioRpcError as exc:
        if exc.code() == grpc.StatusCode.UNAUTHENTICATED:
            return from_rpc_error(exc)
    return None


_UNFINISHED = (pb.MESSAGE_STATUS_FAILED, pb.MESSAGE_STATUS_CANCELLED)


def _message_error(message: pb.Message) -> ApiError:
    """The error of a failed or cancelled reply, from its stored status."""
    if message.HasField("error") and message.error.code:
        return from_status(message.error)
    return ApiError(502, openai_error(502, "the turn did not complete", "TURN_FAILED"))


async def _stream_response(call: Any, writer: oai.ChunkWriter, headers: dict[str, str]) -> Response:
    """Reads the turn up to its first delta before answering, so an upstream
    failure before any output still gets a proper HTTP status. A failure after
    that ends the stream with OpenAI's error chunk, then ``[DONE]``."""
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
                    return _error_response(_message_error(event.assistant_message), headers)
                break
    except grpc.aio.AioRpcError as exc:
        return _error_response(from_rpc_error(exc), headers)

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


def _chunks(event: pb.SendStreamingMessageResponse, writer: oai.ChunkWriter, failed: list[pb.Message]) -> list[str]:
    """The SSE data for one event; a failed or cancelled reply gets no finishing
    chunk (the error chunk follows) and is appended to ``failed``."""
    kind = event.WhichOneof("event")
    if kind == "turn_started":
        writer.id = f"chatcmpl-{event.turn_started.message_id}"
        return []
    if kind in ("input_message", "tool_call_started", "tool_call_completed"):
        return []  # server-side steps stay in the stored session, as a chat completion shows none
    if kind == "delta":
        return [writer.delta(event.delta)]
    if event.assistant_message.status in _UNFINISHED:
        failed.append(event.assistant_message)
        return []
    writer.id = writer.id or f"chatcmpl-{event.assistant_message.id}"
    return writer.final(event.assistant_message)


async def list_models(request: Request) -> Response:
    """OpenAI ``GET /v1/models``: the upstream models, then every agent as ``agent:<key>``."""
    bridge: Bridge = request.app.state.bridge
    metadata = _metadata(request)
    try:
        models = await bridge.models.ListModels(pb.ListModelsRequest(), metadata=metadata)
        data = [
            {"id": m.id, "object": "model", "created": 0, "owned_by": m.owned_by or "upstream"} for m in models.models
        ]
        token = ""
        while True:
            page = await bridge.agents.ListAgents(
                pb.ListAgentsRequest(page_size=100, page_token=token), metadata=metadata
            )
            data.extend(
                {
                    "id": f"{oai.AGENT_PREFIX}{a.key}",
                    "object": "model",
                    "created": a.create_time.seconds,
                    "owned_by": "agentapi",
                }
                for a in page.agents
            )
            token = page.next_page_token
            if not token:
                break
    except grpc.aio.AioRpcError as exc:
        return _error_response(from_rpc_error(exc))
    return JSONResponse({"object": "list", "data": data})


async def healthz(request: Request) -> Response:
    """Liveness of the bridge itself."""
    return JSONResponse({"status": "ok"})


async def not_found(request: Request, exc: Exception) -> Response:
    """Unknown routes answer in OpenAI's error shape."""
    return JSONResponse(
        openai_error(404, f"no route for {request.method} {request.url.path}", "NOT_FOUND"), status_code=404
    )


def create_app(grpc_target: str) -> Starlette:
    """The bridge app, calling the gRPC server at ``grpc_target`` (``host:port``)."""
    bridge = Bridge(grpc_target)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await bridge.open()
        yield
        await bridge.close()

    app = Starlette(
        routes=[
            Route("/v1/chat/completions", chat_completions, methods=["POST"]),
            Route("/v1/models", list_models, methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/openapi.json", openapi.openapi_json, methods=["GET"]),
            *transcode.routes(),  # after the OpenAI routes, which win on the same path
        ],
        lifespan=lifespan,
        exception_handlers={404: not_found, 405: not_found},
    )
    app.state.bridge = bridge
    return app
