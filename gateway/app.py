"""The JSON bridge: an ASGI app that serves web products and OpenAI-style callers
by calling the gRPC server through the generated stubs. This module only
assembles it; each surface owns its requests:

- ``gateway/openai/chat.py``: ``POST /v1/chat/completions`` (JSON, or SSE with ``stream: true``)
- ``gateway/openai/responses.py``: ``/v1/responses`` (create, JSON or SSE; retrieve, stream again,
  cancel, delete, input items, input tokens)
- ``gateway/openai/conversations.py``: ``/v1/conversations`` and their items
- ``gateway/openai/models.py``: ``GET /v1/models``, ``GET /v1/models/{model}``
- ``gateway/health.py``: ``GET /healthz`` (liveness), ``GET /readyz`` (the server's gRPC health)
- ``gateway/openapi.py``: ``GET /openapi.json``
- ``gateway/console.py``: the web console at ``/console`` (static files; it calls the REST API)
- ``GET /metrics``: Prometheus metrics (server/observability/metrics.py)
- ``gateway/transcode.py``: every annotated RPC over REST

Middleware, outermost first: request ids and the request log
(gateway/middleware.py), CORS (Starlette's, when ``AGENTAPI_CORS_ORIGINS`` is
set), the request body limit. Errors use OpenAI's body shape (gateway/errors.py).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway import console, health, openapi, transcode
from gateway.bridge import REQUEST_ID_HEADER, Bridge
from gateway.errors import openai_error
from gateway.middleware import BodyLimit, RequestId
from gateway.openai import chat, conversations, models, responses
from gateway.settings import BridgeSettings
from server.observability import metrics, tracing

# Response headers a browser script may read: the session to continue, the request id for support.
EXPOSED_HEADERS = (chat.SESSION_HEADER, REQUEST_ID_HEADER, "Retry-After")


async def not_found(request: Request, exc: Exception) -> Response:
    """Unknown routes answer in OpenAI's error shape."""
    return JSONResponse(
        openai_error(404, f"no route for {request.method} {request.url.path}", "NOT_FOUND"), status_code=404
    )


async def prometheus_metrics(request: Request) -> Response:
    """``GET /metrics``: every agentapi metric in Prometheus' text format (all workers' together)."""
    body, content_type = metrics.exposition()
    return Response(body, media_type=content_type)


def _middleware(settings: BridgeSettings) -> list[Middleware]:
    # The OpenTelemetry ASGI middleware (when tracing is on) is outermost: its
    # server span, continuing the caller's traceparent, covers the whole request.
    stack = [Middleware(cls, **kwargs) for cls, kwargs in tracing.asgi_middleware()]
    stack.append(Middleware(RequestId))
    if settings.cors_origins:
        # Starlette's CORSMiddleware: it answers preflights and varies on Origin
        # as the spec wants, which a hand-rolled header would get wrong.
        stack.append(
            Middleware(
                CORSMiddleware,
                allow_origins=list(settings.cors_origins),
                allow_methods=["*"],
                allow_headers=["*"],
                expose_headers=list(EXPOSED_HEADERS),
                max_age=600,
            )
        )
    stack.append(Middleware(BodyLimit, max_bytes=settings.max_request_bytes))
    return stack


def create_app(grpc_target: str, settings: BridgeSettings | None = None) -> Starlette:
    """The bridge app, calling the gRPC server at ``grpc_target`` (``host:port``),
    configured by ``settings`` (default: :meth:`BridgeSettings.from_env`)."""
    settings = settings or BridgeSettings.from_env()
    bridge = Bridge(grpc_target)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await bridge.open()
        yield
        await bridge.close()

    app = Starlette(
        routes=[
            Route("/v1/chat/completions", chat.chat_completions, methods=["POST"]),
            Route("/v1/responses", responses.create_response, methods=["POST"]),
            Route("/v1/responses/input_tokens", responses.count_input_tokens, methods=["POST"]),
            Route("/v1/responses/{response_id}", responses.get_response, methods=["GET"]),
            Route("/v1/responses/{response_id}", responses.delete_response, methods=["DELETE"]),
            Route("/v1/responses/{response_id}/cancel", responses.cancel_response, methods=["POST"]),
            Route("/v1/responses/{response_id}/input_items", responses.list_input_items, methods=["GET"]),
            *conversations.routes(),
            Route("/v1/models", models.list_models, methods=["GET"]),
            Route("/v1/models/{model:path}", models.get_model, methods=["GET"]),
            Route("/healthz", health.healthz, methods=["GET"]),
            Route("/readyz", health.readyz, methods=["GET"]),
            Route("/openapi.json", openapi.openapi_json, methods=["GET"]),
            *console.routes(),
            Route("/metrics", prometheus_metrics, methods=["GET"]),
            *transcode.routes(),  # after the OpenAI routes, which win on the same path
        ],
        middleware=_middleware(settings),
        lifespan=lifespan,
        exception_handlers={404: not_found, 405: not_found},
    )
    app.state.bridge = bridge
    app.state.settings = settings
    return app
