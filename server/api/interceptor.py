"""The one server interceptor: authenticates, and turns domain errors into statuses.

Health checking and reflection need no key, so grpcurl and ``buf curl`` work
without the protos.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from grpc_status import rpc_status

from server.api.status import to_status
from server.domain.auth import Authenticator
from server.domain.common import Principal
from server.domain.errors import AgentAPIError

log = logging.getLogger(__name__)

PUBLIC_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")
_principal: contextvars.ContextVar[Principal] = contextvars.ContextVar("principal")


def current_principal() -> Principal:
    """The caller of the RPC being served."""
    return _principal.get()


def _bearer(metadata: Any) -> str:
    for key, value in metadata or ():
        if key == "authorization":
            scheme, _, token = str(value).partition(" ")
            return token.strip() if scheme.lower() == "bearer" else ""
    return ""


async def _abort(context: grpc.aio.ServicerContext, error: AgentAPIError) -> None:
    if error.code == "INTERNAL":
        log.error("internal error: %s", error)
    await context.abort_with_status(rpc_status.to_status(to_status(error)))


async def _fail(context: grpc.aio.ServicerContext, exc: Exception, method: str) -> None:
    """Ends the call with the error's status; anything unexpected is INTERNAL, logged."""
    if isinstance(exc, grpc.aio.AbortError):
        raise exc
    if not isinstance(exc, AgentAPIError):
        log.error("unhandled error in %s", method, exc_info=exc)
        exc = AgentAPIError("INTERNAL", "INTERNAL", "internal error")
    await _abort(context, exc)


class ApiInterceptor(grpc.aio.ServerInterceptor):
    """Wraps every handler: checks ``authorization: Bearer <key>`` and maps
    :class:`AgentAPIError` (and unexpected exceptions, as INTERNAL) to a
    ``google.rpc.Status`` with an ErrorInfo."""

    def __init__(self, authenticator: Authenticator) -> None:
        self.authenticator = authenticator

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None or details.method.startswith(PUBLIC_PREFIXES):
            return handler
        authenticate = self.authenticator.authenticate
        if handler.unary_unary is not None:
            behavior = handler.unary_unary

            async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
                try:
                    _principal.set(await authenticate(_bearer(context.invocation_metadata())))
                    return await behavior(request, context)
                except Exception as exc:
                    await _fail(context, exc, details.method)

            return grpc.unary_unary_rpc_method_handler(unary, handler.request_deserializer, handler.response_serializer)
        if handler.unary_stream is not None:
            stream_behavior = handler.unary_stream

            async def stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
                try:
                    _principal.set(await authenticate(_bearer(context.invocation_metadata())))
                    async for item in stream_behavior(request, context):
                        yield item
                except Exception as exc:
                    await _fail(context, exc, details.method)

            return grpc.unary_stream_rpc_method_handler(
                stream, handler.request_deserializer, handler.response_serializer
            )
        return handler
