"""The idempotency interceptor: ``idempotency-key`` metadata on SendMessage,
SendStreamingMessage, SubmitToolOutputs, RegenerateMessage, ForkSession,
ReplaySession and every Create* RPC.

It sits inside :class:`~server.api.interceptor.ApiInterceptor` (which has
authenticated the caller and maps errors), claims the key in the database
(server/domain/idempotency.py), runs the handler and stores what it answered:
the serialized response (a stream's messages, consecutive deltas coalesced into
one) and the ``google.rpc.Status`` it ended with. A replay sends exactly that,
without running the handler, so the upstream is never called twice.

Whether a failure is stored or releases the key depends on whether the request
changed anything: a commit while it ran (see :func:`server.store.db.track_commits`)
makes its outcome final; without one, errors a retry may cure (UNAVAILABLE,
RESOURCE_EXHAUSTED, ABORTED, DEADLINE_EXCEEDED, CANCELLED, INTERNAL) release
the key, and the caller's own mistakes (INVALID_ARGUMENT, NOT_FOUND, ...) are stored.
A failure of agentapi itself (DATABASE_UNAVAILABLE, SHUTTING_DOWN) releases the
key even after a commit: the retry runs, and a turn's retry answers the input
the first attempt stored instead of storing it again.

``CreateApiKey`` is stored without its secret: only the key's SHA-256 may rest
in the database, so a replay returns the key with an empty ``secret``.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from google.rpc import status_pb2
from grpc_status import rpc_status

from server.api.interceptor import current_principal
from server.api.status import to_status
from server.domain.errors import AgentAPIError
from server.domain.idempotency import Claim, IdempotencyStore, Outcome, check_key, request_hash, use_key
from server.domain.runs.failures import SHUTDOWN_CANCEL
from server.store.db import track_commits

log = logging.getLogger(__name__)

METADATA_KEY = "idempotency-key"
TURN_METHODS = frozenset({"SendMessage", "SendStreamingMessage", "SubmitToolOutputs", "RegenerateMessage"})
# Other methods that create something, beside every Create*.
CREATING_METHODS = frozenset({"ForkSession", "ReplaySession"})
# Failures that, when nothing was committed, a retry with the same key may cure.
RELEASE_CODES = frozenset(
    {"UNAVAILABLE", "RESOURCE_EXHAUSTED", "ABORTED", "DEADLINE_EXCEEDED", "CANCELLED", "INTERNAL", "UNKNOWN"}
)
# Failures of agentapi itself that release the key even after a commit: the
# database went away mid-request, or the server shut down under it.
ALWAYS_RELEASE_REASONS = frozenset({"DATABASE_UNAVAILABLE", "SHUTTING_DOWN", "INTERRUPTED"})
# Response fields never stored: secrets shown once.
_SECRET_FIELDS = {"CreateApiKey": ("secret",)}


def applies(method: str) -> bool:
    """Whether ``/pkg.Service/Method`` takes an idempotency key."""
    name = method.rsplit("/", 1)[-1]
    return name in TURN_METHODS or name in CREATING_METHODS or name.startswith("Create")


def _key(metadata: Any) -> str | None:
    for name, value in metadata or ():
        if name == METADATA_KEY:
            return check_key(value if isinstance(value, str) else "")
    return None


def _error_record(exc: BaseException) -> dict[str, Any] | None:
    """The stored form of the status a call ended with (None: unknown, e.g. an abort)."""
    if isinstance(exc, asyncio.CancelledError) and SHUTDOWN_CANCEL in exc.args:
        exc = AgentAPIError("UNAVAILABLE", "SHUTTING_DOWN", "the server shut down before the request finished")
    elif isinstance(exc, (asyncio.CancelledError, GeneratorExit)):
        exc = AgentAPIError("CANCELLED", "CANCELLED", "the original request was cancelled before it finished")
    elif isinstance(exc, grpc.aio.AbortError):
        return None
    elif not isinstance(exc, AgentAPIError):
        exc = AgentAPIError("INTERNAL", "INTERNAL", "internal error")
    status = to_status(exc)
    return {
        "code": exc.code,
        "reason": exc.reason,
        "message": exc.message,
        "status": base64.b64encode(status.SerializeToString()).decode(),
    }


async def _replay_error(context: grpc.aio.ServicerContext, error: dict[str, Any]) -> None:
    status = status_pb2.Status.FromString(base64.b64decode(error["status"]))
    await context.abort_with_status(rpc_status.to_status(status))


def _is_delta(message: Any) -> bool:
    try:
        return bool(message.WhichOneof("event") == "delta")
    except (AttributeError, ValueError):  # not a turn event
        return False


class _Coalescer:
    """Collects a stream's responses, merging consecutive deltas into one."""

    def __init__(self, serialize: Callable[[Any], bytes]) -> None:
        self.serialize = serialize
        self.responses: list[bytes] = []
        self._delta: Any = None

    def add(self, message: Any) -> None:
        if not _is_delta(message):
            self.flush()
            self.responses.append(self.serialize(message))
            return
        if self._delta is None:
            self._delta = type(message)()
            self._delta.CopyFrom(message)
            return
        merged, delta = self._delta.delta, message.delta
        merged.content += delta.content
        merged.refusal += delta.refusal
        merged.logprobs.extend(delta.logprobs)
        for fragment in delta.tool_calls:
            last = merged.tool_calls[-1] if merged.tool_calls else None
            if last is not None and last.index == fragment.index and not fragment.id:
                last.arguments += fragment.arguments
                last.name = last.name or fragment.name
            else:
                merged.tool_calls.add().CopyFrom(fragment)

    def flush(self) -> list[bytes]:
        if self._delta is not None:
            self.responses.append(self.serialize(self._delta))
            self._delta = None
        return self.responses


class IdempotencyInterceptor(grpc.aio.ServerInterceptor):
    """Deduplicates keyed calls through :class:`IdempotencyStore`."""

    def __init__(self, store: IdempotencyStore, hash_key: bytes = b"") -> None:
        self.store = store
        self.hash_key = hash_key  # keys the request hashes (domain.idempotency.request_hash)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None or not applies(details.method):
            return handler
        method = details.method
        serialize = handler.response_serializer or (lambda message: message.SerializeToString())

        def wire(message: Any) -> bytes:
            """Replays are stored bytes already; live responses are messages."""
            return message if isinstance(message, bytes) else serialize(message)

        secret_fields = _SECRET_FIELDS.get(method.rsplit("/", 1)[-1])

        def stored(message: Any) -> bytes:
            if secret_fields:
                copy = type(message)()
                copy.CopyFrom(message)
                for name in secret_fields:
                    copy.ClearField(name)
                message = copy
            return serialize(message)

        async def claim(request: Any, context: grpc.aio.ServicerContext) -> Claim | Outcome | None:
            key = _key(context.invocation_metadata())
            use_key(None)
            if key is None:
                return None
            digest = request_hash(method, request.SerializeToString(deterministic=True), self.hash_key)
            claimed = await self.store.begin(current_principal(), key, method, digest)
            if isinstance(claimed, Claim):
                use_key(key)
            return claimed

        if handler.unary_unary is not None:
            behavior = handler.unary_unary

            async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
                claimed = await claim(request, context)
                if claimed is None:
                    return await behavior(request, context)
                if isinstance(claimed, Outcome):
                    if claimed.error is not None:
                        await _replay_error(context, claimed.error)
                    return claimed.responses[0]
                commits = track_commits()
                try:
                    response = await behavior(request, context)
                except BaseException as exc:
                    await self._settle(claimed, [], exc, commits[0] > 0)
                    raise
                data = wire(response)
                await self._settle(claimed, [stored(response) if secret_fields else data], None, True)
                return data

            return grpc.unary_unary_rpc_method_handler(unary, handler.request_deserializer, wire)
        if handler.unary_stream is not None:
            stream_behavior = handler.unary_stream

            async def stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
                claimed = await claim(request, context)
                if claimed is None:
                    async for item in stream_behavior(request, context):
                        yield item
                    return
                if isinstance(claimed, Outcome):
                    for data in claimed.responses:
                        yield data
                    if claimed.error is not None:
                        await _replay_error(context, claimed.error)
                    return
                commits = track_commits()
                collected = _Coalescer(stored)
                try:
                    async for item in stream_behavior(request, context):
                        collected.add(item)
                        yield wire(item)
                except BaseException as exc:
                    await self._settle(claimed, collected.flush(), exc, commits[0] > 0)
                    raise
                await self._settle(claimed, collected.flush(), None, True)

            return grpc.unary_stream_rpc_method_handler(stream, handler.request_deserializer, wire)
        return handler

    async def _settle(self, claim: Claim, responses: list[bytes], exc: BaseException | None, wrote: bool) -> None:
        """Stores the outcome, or releases the key of a request that changed
        nothing and may succeed on a retry. Shielded from the caller's
        cancellation; a database failure here is logged (the store retries
        it), never raised over the call's own outcome."""
        error = None if exc is None else _error_record(exc)
        release = exc is not None and (
            (not wrote and (error is None or error["code"] in RELEASE_CODES))
            # agentapi failed, not the request: whatever it stored, a retry must
            # run (and a turn's retry answers the stored input, see
            # server/domain/runs/admission.py), never replay this error.
            or (error is not None and error["reason"] in ALWAYS_RELEASE_REASONS)
        )
        try:
            await asyncio.shield(self.store.settle(claim, responses, error, release))
        except asyncio.CancelledError:
            raise
        except Exception as failure:
            log.warning("could not settle idempotency key %r yet: %s", claim.key, failure)
