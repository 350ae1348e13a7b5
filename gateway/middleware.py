"""ASGI middleware of the bridge: request ids with one log line per request, and
the request body limit. Pure ASGI (not Starlette's BaseHTTPMiddleware) so SSE
responses stream through untouched."""

from __future__ import annotations

import json
import logging
import re
import time
import uuid

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.errors import openai_error

log = logging.getLogger("agentapi.bridge")

REQUEST_ID_HEADER = "x-request-id"
# What a caller's id may be to be echoed: short, and safe in logs and gRPC metadata.
SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:/+=-]{1,128}")


async def _send_error(send: Send, status: int, message: str, reason: str) -> None:
    body = json.dumps(openai_error(status, message, reason)).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class RequestId:
    """Gives every HTTP request an id: the caller's ``x-request-id`` when it
    matches :data:`SANE_REQUEST_ID`, else a new UUID. The id is in
    ``scope["state"]["request_id"]`` (forwarded to gRPC as metadata), in the
    response's ``x-request-id`` header, and in the one log line per request
    (method, path, status, duration in ms), written when the response ends.
    An exception escaping the app is answered 500 in OpenAI's shape (with the
    id) if no response started, then re-raised for the server's log."""

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

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = rid
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            if not status:
                await _send_error(send_with_id, 500, "internal error", "INTERNAL")
            raise
        finally:
            log.info(
                "%s %s %s %.1fms request_id=%s",
                scope["method"],
                scope["path"],
                status or "-",
                (time.perf_counter() - started) * 1000,
                rid,
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
