"""The outer server interceptor: authenticates, turns domain errors into
statuses, and drains calls at shutdown.

Health checking and reflection need no key, so grpcurl and ``buf curl`` work
without the protos. Once :meth:`ApiInterceptor.drain` is called (SIGTERM), new
calls are refused with UNAVAILABLE (SHUTTING_DOWN), so clients retry on
another replica; calls in flight run on until they end or are cancelled by
:meth:`ApiInterceptor.cancel_in_flight`, which ends them with the same status.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import grpc
from grpc_status import rpc_status
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from server import logs
from server.api.status import to_status
from server.domain.auth import Authenticator
from server.domain.common import Principal, utcnow
from server.domain.errors import AgentAPIError, invalid_argument
from server.domain.runs.failures import SHUTDOWN_CANCEL
from server.observability import request_log
from server.store.db import translate

log = logging.getLogger(__name__)

PUBLIC_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")
_principal: contextvars.ContextVar[Principal] = contextvars.ContextVar("principal")


def current_principal() -> Principal:
    """The caller of the RPC being served."""
    return _principal.get()


def _request_id(metadata: Any) -> str:
    """The caller's ``x-request-id`` (the bridge forwards its own), bounded."""
    for key, value in metadata or ():
        if key == "x-request-id":
            return str(value)[:128]
    return ""


def _bearer(metadata: Any) -> str:
    for key, value in metadata or ():
        if key == "authorization":
            scheme, _, token = str(value).partition(" ")
            return token.strip() if scheme.lower() == "bearer" else ""
    return ""


async def _abort(context: grpc.aio.ServicerContext, error: AgentAPIError) -> None:
    request_log.note(code=error.code, reason=error.reason)
    if error.code == "INTERNAL":
        log.error("internal error: %s", error)
    await context.abort_with_status(rpc_status.to_status(to_status(error)))


async def _fail(context: grpc.aio.ServicerContext, exc: Exception, method: str) -> None:
    """Ends the call with the error's status; anything unexpected is INTERNAL, logged."""
    if isinstance(exc, grpc.aio.AbortError):
        raise exc
    if isinstance(exc, (DBAPIError, PoolTimeoutError)):  # one that escaped Database.session
        exc = translate(exc)
    if not isinstance(exc, AgentAPIError):
        log.error("unhandled error in %s", method, exc_info=exc)
        exc = AgentAPIError("INTERNAL", "INTERNAL", "internal error")
    await _abort(context, exc)


def shutting_down(message: str = "the server is shutting down; retry on another replica") -> AgentAPIError:
    """UNAVAILABLE (SHUTTING_DOWN)."""
    return AgentAPIError("UNAVAILABLE", "SHUTTING_DOWN", message)


class _Undecodable:
    """Stands in for a request that did not parse as its protobuf message."""

    def __init__(self, error: Exception) -> None:
        self.error = error


def tolerant(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    """``deserializer`` returning an :class:`_Undecodable` instead of raising.

    grpc.aio answers a request its deserializer cannot parse with INTERNAL and
    logs a traceback (nothing of ours runs); the handler below answers it
    INVALID_ARGUMENT (INVALID_REQUEST) instead, once the caller is authenticated."""
    if deserializer is None:
        return None

    def deserialize(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception as exc:  # protobuf's DecodeError, or any parser's error
            return _Undecodable(exc)

    return deserialize


def undecodable(request: Any, method: str) -> AgentAPIError | None:
    """INVALID_ARGUMENT (INVALID_REQUEST) for a request that did not parse, else None."""
    if not isinstance(request, _Undecodable):
        return None
    log.info("%s: request is not a valid protobuf message: %s", method, request.error)
    return invalid_argument(
        f"the request is not a valid {method.rsplit('/', 1)[-1]} request message (protobuf): {request.error}",
        reason="INVALID_REQUEST",
    )


async def _abort_undecodable(context: grpc.aio.ServicerContext, request: Any, method: str) -> None:
    if bad := undecodable(request, method):
        await _abort(context, bad)


def _public(handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
    """A method that needs no key (health): only an undecodable request is
    answered here. Reflection's streams of requests are left as they are."""
    if handler.unary_unary is not None:
        behavior = handler.unary_unary

        async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await _abort_undecodable(context, request, method)
            return await behavior(request, context)

        return grpc.unary_unary_rpc_method_handler(
            unary, tolerant(handler.request_deserializer), handler.response_serializer
        )
    if handler.unary_stream is not None:
        stream_behavior = handler.unary_stream
        if inspect.isasyncgenfunction(stream_behavior):

            async def stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
                await _abort_undecodable(context, request, method)
                async for item in stream_behavior(request, context):
                    yield item

        else:  # health's Watch writes through the context and returns nothing

            async def stream(request: Any, context: grpc.aio.ServicerContext) -> Any:  # type: ignore[misc]
                await _abort_undecodable(context, request, method)
                return await stream_behavior(request, context)

        return grpc.unary_stream_rpc_method_handler(
            stream, tolerant(handler.request_deserializer), handler.response_serializer
        )
    return handler


class ApiInterceptor(grpc.aio.ServerInterceptor):
    """Wraps every handler: checks ``authorization: Bearer <key>`` and maps
    :class:`AgentAPIError` (and unexpected exceptions, as INTERNAL) to a
    ``google.rpc.Status`` with an ErrorInfo. Tracks the calls in flight so a
    shutdown can wait for them."""

    def __init__(self, authenticator: Authenticator) -> None:
        self.authenticator = authenticator
        self.draining = False
        self._calls: dict[asyncio.Task[Any], datetime] = {}
        self._stopped: set[asyncio.Task[Any]] = set()
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def in_flight(self) -> int:
        """Calls being served."""
        return len(self._calls)

    def live_since(self) -> datetime:
        """When the oldest call in flight started (naive UTC), or now: rows this
        process wrote before then belong to no call of it any more."""
        return min(self._calls.values(), default=utcnow())

    def drain(self) -> None:
        """Refuses new calls from now on (UNAVAILABLE, SHUTTING_DOWN)."""
        self.draining = True

    async def wait_idle(self, timeout_s: float) -> bool:
        """Waits up to ``timeout_s`` for the calls in flight to end; True if they did."""
        if self._idle.is_set():
            return True
        try:
            await asyncio.wait_for(self._idle.wait(), max(0.0, timeout_s))
        except TimeoutError:
            return False
        return True

    async def cancel_in_flight(self, timeout_s: float = 10.0) -> int:
        """Cancels the calls still in flight (each ends with UNAVAILABLE,
        SHUTTING_DOWN, after its handler stored what it must) and waits up to
        ``timeout_s`` for their handlers to finish. Returns how many."""
        calls = [task for task in self._calls if not task.done()]
        for task in calls:
            self._stopped.add(task)
            task.cancel(SHUTDOWN_CANCEL)  # the turn stores SHUTTING_DOWN as its reason
        if calls:
            await asyncio.wait(calls, timeout=timeout_s)
        return len(calls)

    def _enter(self) -> asyncio.Task[Any] | None:
        if self.draining:
            raise shutting_down()
        task = asyncio.current_task()
        if task is not None:
            self._calls[task] = utcnow()
            self._idle.clear()
        return task

    def _leave(self, task: asyncio.Task[Any] | None) -> None:
        if task is not None:
            self._calls.pop(task, None)
            self._stopped.discard(task)
        if not self._calls:
            self._idle.set()

    async def _cancelled(self, context: grpc.aio.ServicerContext, task: asyncio.Task[Any] | None) -> None:
        """A call cancelled by :meth:`cancel_in_flight` ends UNAVAILABLE; any other cancel goes on."""
        if task is not None and task in self._stopped:
            await _abort(context, shutting_down("the server shut down before the call finished"))

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None:
            return handler
        if details.method.startswith(PUBLIC_PREFIXES):
            return _public(handler, details.method)
        authenticate = self.authenticator.authenticate
        if handler.unary_unary is not None:
            behavior = handler.unary_unary

            async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
                task = None
                try:
                    task = self._enter()
                    logs.REQUEST_ID.set(_request_id(context.invocation_metadata()))
                    _principal.set(principal := await authenticate(_bearer(context.invocation_metadata())))
                    request_log.note(tenant=principal.tenant_id)
                    if bad := undecodable(request, details.method):
                        raise bad
                    return await behavior(request, context)
                except asyncio.CancelledError:
                    await self._cancelled(context, task)
                    raise
                except Exception as exc:
                    await _fail(context, exc, details.method)
                finally:
                    self._leave(task)

            return grpc.unary_unary_rpc_method_handler(
                unary, tolerant(handler.request_deserializer), handler.response_serializer
            )
        if handler.unary_stream is not None:
            stream_behavior = handler.unary_stream

            async def stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
                task = None
                try:
                    task = self._enter()
                    logs.REQUEST_ID.set(_request_id(context.invocation_metadata()))
                    _principal.set(principal := await authenticate(_bearer(context.invocation_metadata())))
                    request_log.note(tenant=principal.tenant_id)
                    if bad := undecodable(request, details.method):
                        raise bad
                    async for item in stream_behavior(request, context):
                        yield item
                except asyncio.CancelledError:
                    await self._cancelled(context, task)
                    raise
                except Exception as exc:
                    await _fail(context, exc, details.method)
                finally:
                    self._leave(task)

            return grpc.unary_stream_rpc_method_handler(
                stream, tolerant(handler.request_deserializer), handler.response_serializer
            )
        return handler
