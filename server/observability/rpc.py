"""The gRPC server interceptor that measures and logs each call: the request
counter and duration histogram by method and code, the open-streams gauge,
errors and quota refusals by reason, and the one log line per call.

It sits inside the OpenTelemetry interceptor (so the line carries the trace
id) and outside :class:`server.api.interceptor.ApiInterceptor`, which reports
the tenant and the error's code and reason through
:func:`server.observability.request_log.note`.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from server.observability import metrics, request_log, tracing
from server.observability.runs import QUOTA_REASONS

_QUIET_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")


def _metadata_value(context: grpc.aio.ServicerContext, name: str) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == name:
            return str(value)[:128]
    return ""


class _Call:
    """One call's bookkeeping, from its start to its line."""

    __slots__ = ("method", "started", "holder", "context", "request")

    def __init__(self, method: str, context: grpc.aio.ServicerContext, request: Any) -> None:
        self.method = method
        self.context = context
        self.request = request
        self.started = time.perf_counter()
        self.holder = request_log.begin()

    def done(self, error: BaseException | None) -> None:
        holder = self.holder
        if error is None:
            code = "OK"
        elif isinstance(error, (asyncio.CancelledError, GeneratorExit)):
            code = holder.get("code") or "CANCELLED"
        else:
            code = holder.get("code") or "UNKNOWN"
        reason = holder.get("reason", "")
        seconds = time.perf_counter() - self.started
        metrics.RPC_REQUESTS.labels(self.method, code).inc()
        metrics.RPC_DURATION.labels(self.method).observe(seconds)
        if reason and code != "OK":
            metrics.ERRORS.labels(reason).inc()
            if reason in QUOTA_REASONS:
                metrics.REFUSALS.labels(reason).inc()
            tracing.mark_error(reason)
        quiet = self.method.startswith(_QUIET_PREFIXES)
        request_log.rpc(
            self.method,
            code,
            seconds,
            level=logging.DEBUG if quiet else logging.INFO,
            reason=reason,
            tenant=holder.get("tenant", ""),
            session=str(getattr(self.request, "session_id", "") or ""),
            request_id=_metadata_value(self.context, "x-request-id"),
            trace_id=tracing.trace_id(),
        )


class RequestObserver(grpc.aio.ServerInterceptor):
    """Counts, times and logs every call (health and reflection logged at debug)."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None:
            return handler
        method = details.method
        if handler.unary_unary is not None:
            behavior = handler.unary_unary

            async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
                call = _Call(method, context, request)
                try:
                    result = await behavior(request, context)
                except BaseException as exc:
                    call.done(exc)
                    raise
                call.done(None)
                return result

            return grpc.unary_unary_rpc_method_handler(unary, handler.request_deserializer, handler.response_serializer)
        if handler.unary_stream is not None:
            stream_behavior = handler.unary_stream
            streams = metrics.OPEN_STREAMS.labels("grpc")
            if inspect.isasyncgenfunction(stream_behavior):

                async def stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
                    call = _Call(method, context, request)
                    streams.inc()
                    try:
                        async for item in stream_behavior(request, context):
                            yield item
                    except BaseException as exc:
                        call.done(exc)
                        raise
                    finally:
                        streams.dec()
                    call.done(None)

            else:  # health's Watch writes through the context and returns nothing

                async def stream(request: Any, context: grpc.aio.ServicerContext) -> Any:  # type: ignore[misc]
                    call = _Call(method, context, request)
                    try:
                        result = await stream_behavior(request, context)
                    except BaseException as exc:
                        call.done(exc)
                        raise
                    call.done(None)
                    return result

            return grpc.unary_stream_rpc_method_handler(
                stream, handler.request_deserializer, handler.response_serializer
            )
        return handler
