"""``/healthz`` (liveness of the bridge) and ``/readyz`` (readiness of the server behind it)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gateway.bridge import Bridge


async def healthz(request: Request) -> Response:
    """200 ``{"status": "ok"}`` while the bridge process serves; needs no key."""
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    """200 ``{"status": "SERVING"}`` when the gRPC server's health service
    (``grpc.health.v1.Health/Check``, service ``""``) reports SERVING, else
    503 ``{"status": "NOT_SERVING"}`` (also when the server is unreachable or
    does not answer within the readiness timeout); needs no key."""
    bridge: Bridge = request.app.state.bridge
    if await bridge.serving(request.app.state.settings.readiness_timeout_s):
        return JSONResponse({"status": "SERVING"})
    return JSONResponse({"status": "NOT_SERVING"}, status_code=503)
