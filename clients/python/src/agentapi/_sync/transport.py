# Generated from agentapi/_async by scripts/unasync_client.py. Do not edit.
"""One channel, its metadata and deadline, retries, and typed errors, for every call."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any, TypeVar

import grpc
from google.protobuf.message import Message as ProtoMessage
from tenacity import Retrying, retry_if_exception, stop_after_attempt

from agentapi._channels import Settings, sync_channel
from agentapi._retry import Safety, should_retry, wait
from agentapi.errors import from_rpc_error

R = TypeVar("R", bound=ProtoMessage)


class SyncTransport:
    """Calls methods by their full path (``/agentapi.v1.AgentService/GetAgent``)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.channel = sync_channel(settings)

    def _retrying(self, safety: Safety) -> Retrying:
        return Retrying(
            stop=stop_after_attempt(self.settings.max_retries + 1),
            wait=wait,
            retry=retry_if_exception(lambda error: should_retry(error, safety)),
            reraise=True,
        )

    def metadata(self, safety: Safety, idempotency_key: str | None) -> list[tuple[str, str]]:
        """The call's metadata; a KEYED call gets one key for all its attempts."""
        metadata = self.settings.metadata()
        if safety is Safety.KEYED:
            metadata.append(("idempotency-key", idempotency_key or str(uuid.uuid4())))
        return metadata

    def unary(
        self,
        method: str,
        request: ProtoMessage,
        response_type: type[R],
        safety: Safety = Safety.READ,
        idempotency_key: str | None = None,
    ) -> R:
        """One unary call, retried per ``safety``.

        Raises:
            AgentAPIError: the typed error of the last attempt.
        """
        call: Any = self.channel.unary_unary(
            method, request_serializer=_serialize, response_deserializer=response_type.FromString
        )
        metadata = self.metadata(safety, idempotency_key)
        for attempt in self._retrying(safety):
            with attempt:
                try:
                    response: R = call(request, metadata=metadata, timeout=self.settings.timeout)
                except grpc.RpcError as exc:
                    raise from_rpc_error(exc) from None
                return response
        raise AssertionError("unreachable: tenacity reraises the last error")

    def open_stream(
        self, method: str, request: ProtoMessage, response_type: type[R], idempotency_key: str | None
    ) -> tuple[Any, Iterator[R]]:
        """Opens a server stream and reads its first response, retrying (with one
        idempotency key) while nothing was received.

        Returns:
            The call (for ``cancel()``) and an iterator of every response, the first included.

        Raises:
            AgentAPIError: the typed error when the stream cannot start.
        """
        stream: Any = self.channel.unary_stream(
            method, request_serializer=_serialize, response_deserializer=response_type.FromString
        )
        metadata = self.metadata(Safety.KEYED, idempotency_key)
        for attempt in self._retrying(Safety.KEYED):
            with attempt:
                call = stream(request, metadata=metadata, timeout=self.settings.timeout)
                iterator = call.__iter__()
                try:
                    first: R = iterator.__next__()
                except grpc.RpcError as exc:
                    raise from_rpc_error(exc) from None
                return call, _chain(first, iterator)
        raise AssertionError("unreachable: tenacity reraises the last error")

    def close(self) -> None:
        """Closes the channel; calls in flight are cancelled."""
        self.channel.close()


def _serialize(message: ProtoMessage) -> bytes:
    return message.SerializeToString()


def _chain(first: R, rest: Iterator[R]) -> Iterator[R]:
    yield first
    for item in rest:
        yield item
