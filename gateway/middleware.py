"""ASGI middleware of the bridge: request ids with one log line per request, and
the request body limit. Pure ASGI (not Starlette's BaseHTTPMiddleware) so SSE
responses stream through untouched."""

from __future__ import annotations

import json
import re
import time
import uuid

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.errors import openai_error
from server.observability import metrics, request_log, tracing

REQUEST_ID_HEADER = "x-request-id"
# What a caller's id may be to be echoed: short, and safe in logs and gRPC metadata.
SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:/+=-]{1,128}")


async def _send_error(send: Send, status: int, message: str, reason: str) -> None:
    body = json.dumps(openai_error(status, message, reason)).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def route_of(scope: Scope) -> str:
    """The matched route's template (``/v1/sessions/{session_id}:sendMessage``), bounded; ``-`` when none matched."""
    route = scope.get("route")
    template = getattr(route, "path", None) or getattr(getattr(route, "binding", None), "template", None)
    return metrics.bounded("route", str(template)) if template else "-"


class RequestId:
    """Gives every HTTP request an id: the caller's ``x-request-id`` when it
    matches :data:`SANE_REQUEST_ID`, else a new UUID. The id is in
    ``scope["state"]["request_id"]`` (forwarded to gRPC as metadata), in the
    response's ``x-request-id`` header, and in the one log line per request
    (server/observability/request_log.py: method, path, route, status,
    duration in ms, reason, session, request id, trace id), written when the
    response ends; the request metrics (by method, route template and status;
    SSE responses as open streams) are counted then too. An exception
    escaping the app is answered 500 in OpenAI's shape (with the id) if no
    response started, then re-raised for the server's log."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = Headers(scope=scope).get(REQUEST_ID_HEADER, "")
        rid = given if SANE_REQUEST_ID.fullmatch(given) else str(uuid.uuid4())
        scope.setdefault("state", {})["request_id"] = rid
        started = time.perf_counter()
        status = 0
        session = ""
        streaming = False
        holder = request_log.begin()  # gateway/errors.py notes the reason of an error answer
        trace_id = tracing.trace_id()  # the ASGI instrumentation's server span, when tracing is on

        async def send_with_id(message: Message) -> None:
            nonlocal status, session, streaming
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = MutableHeaders(scope=message)
                headers[REQUEST_ID_HEADER] = rid
                session = headers.get("x-session-id", "")
                if headers.get("content-type", "").startswith("text/event-stream"):
                    streaming = True
                    metrics.OPEN_STREAMS.labels("http").inc()
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            if not status:
                await _send_error(send_with_id, 500, "internal error", "INTERNAL")
            raise
        finally:
            if streaming:
                metrics.OPEN_STREAMS.labels("http").dec()
            seconds = time.perf_counter() - started
            route, method = route_of(scope), scope["method"]
            metrics.HTTP_REQUESTS.labels(method, route, str(status or 0)).inc()
            metrics.HTTP_DURATION.labels(method, route).observe(seconds)
            request_log.http(
                method,
                scope["path"],
                route,
                status or "-",
                seconds,
                reason=holder.get("reason", ""),
                session=session or Headers(scope=scope).get("x-session-id", ""),
                request_id=rid,
                trace_id=trace_id,
            )


class BodyTooLarge(Exception):
    """The request body passed the limit while it was read."""


class BodyLimit:
    """Answers 413 in OpenAI's shape (code ``request_too_large``) for a body
    over ``max_bytes``: at once when ``Content-Length`` says so, else as soon
    as the streamed body passes the limit, so a body is never read whole."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _too_large(self) -> str:
        return f"the request body is larger than the limit of {self.max_bytes} bytes (AGENTAPI_MAX_REQUEST_BYTES)"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = Headers(scope=scope).get("content-length", "")
        if length.isdigit() and int(length) > self.max_bytes:
            await _send_error(send, 413, self._too_large(), "REQUEST_TOO_LARGE")
            return
        received = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge()
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge:
            if started:
                raise
            await _send_error(send, 413, self._too_large(), "REQUEST_TOO_LARGE")
