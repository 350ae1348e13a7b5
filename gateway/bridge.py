"""The bridge's connection to the gRPC server, and the metadata each call carries."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from starlette.requests import Request

from agentapi import v1 as pb
from gateway.errors import IDEMPOTENCY_HEADER, metadata_value
from server.observability import tracing

REQUEST_ID_HEADER = "x-request-id"
# The server bounds what it accepts and stores; the bridge must take any reply
# the server sends (a turn's reply repeats its input, so a 2 MiB prompt makes a
# 4 MiB reply). grpc's default 4 MiB receive limit answered such a finished,
# billed turn with RESOURCE_EXHAUSTED. -1 is unlimited.
CHANNEL_OPTIONS = (
    ("grpc.max_receive_message_length", -1),
    ("grpc.max_send_message_length", -1),
)


class Bridge:
    """The channel to the gRPC server and its stubs; one per app, opened in the lifespan."""

    def __init__(self, grpc_target: str) -> None:
        self.grpc_target = grpc_target
        self.channel: grpc.aio.Channel | None = None

    async def open(self) -> None:
        """Opens the channel (it connects lazily, on the first call)."""
        self.channel = grpc.aio.insecure_channel(self.grpc_target, options=CHANNEL_OPTIONS)
        self.agents = pb.AgentServiceStub(self.channel)
        self.sessions = pb.SessionServiceStub(self.channel)
        self.conversations = pb.ConversationServiceStub(self.channel)
        self.models = pb.ModelServiceStub(self.channel)
        self.health = health_pb2_grpc.HealthStub(self.channel)

    async def close(self) -> None:
        """Closes the channel."""
        if self.channel is not None:
            await self.channel.close()

    async def serving(self, timeout_s: float) -> bool:
        """Whether the server's gRPC health service reports the whole server
        (service ``""``) SERVING within ``timeout_s``; False when unreachable."""
        try:
            reply = await self.health.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout_s)
        except grpc.aio.AioRpcError:
            return False
        return reply.status == health_pb2.HealthCheckResponse.SERVING


def request_id(request: Request) -> str:
    """The request's id, set by :class:`gateway.middleware.RequestId`."""
    return request.scope.get("state", {}).get("request_id", "")


def call_metadata(request: Request, idempotency_key: str | None = None) -> tuple[tuple[str, str], ...]:
    """gRPC metadata for a call made for ``request``: the caller's key (the
    server authenticates it), the request id, and ``idempotency_key`` when given."""
    metadata = []
    authorization = metadata_value("authorization", request.headers.get("authorization", ""))
    if authorization:
        metadata.append(("authorization", authorization))
    if rid := request_id(request):
        metadata.append((REQUEST_ID_HEADER, rid))
    if idempotency_key is not None:
        metadata.append((IDEMPOTENCY_HEADER, idempotency_key))
    return tracing.inject_metadata(metadata)  # traceparent of the HTTP request's span, when tracing is on


def idempotency_key(request: Request) -> str | None:
    """The ``Idempotency-Key`` header, checked by the gRPC server (a 400 here
    only for one that gRPC metadata cannot carry)."""
    value = request.headers.get(IDEMPOTENCY_HEADER)
    return None if value is None else metadata_value(IDEMPOTENCY_HEADER, value)
