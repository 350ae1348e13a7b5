"""A running agentapi for tests: the real gRPC server, the real bridge, and
stubs, all in the test's event loop and on free loopback ports."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from dataclasses import dataclass, field
from typing import Any

import grpc
import httpx
import openai
import uvicorn

from agentapi import v1 as pb
from gateway.app import create_app
from server.app import GrpcServer, start_grpc
from server.config import Config

MASTER_KEY = "sk-test-master"
AUTH = (("authorization", f"Bearer {MASTER_KEY}"),)


def free_port() -> int:
    """A TCP port that was free a moment ago on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Stack:
    """The servers plus ready-made clients. ``restart()`` starts fresh processes'
    worth of state (new server, new pools) on the same database."""

    config: Config
    grpc_server: GrpcServer | None = None
    http_server: uvicorn.Server | None = None
    http_task: asyncio.Task[Any] | None = None
    channel: grpc.aio.Channel | None = None
    bridge_url: str = ""
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def agents(self) -> pb.AgentServiceStub:
        return pb.AgentServiceStub(self.channel)

    @property
    def sessions(self) -> pb.SessionServiceStub:
        return pb.SessionServiceStub(self.channel)

    @property
    def conversations(self) -> pb.ConversationServiceStub:
        return pb.ConversationServiceStub(self.channel)

    @property
    def models(self) -> pb.ModelServiceStub:
        return pb.ModelServiceStub(self.channel)

    @property
    def tenants(self) -> pb.TenantServiceStub:
        return pb.TenantServiceStub(self.channel)

    @property
    def api_keys(self) -> pb.ApiKeyServiceStub:
        return pb.ApiKeyServiceStub(self.channel)

    @property
    def usage(self) -> pb.UsageServiceStub:
        return pb.UsageServiceStub(self.channel)

    def openai(self, api_key: str = MASTER_KEY, **kwargs: Any) -> openai.AsyncOpenAI:
        """The official SDK pointed at the bridge."""
        return openai.AsyncOpenAI(base_url=f"{self.bridge_url}/v1", api_key=api_key, max_retries=0, **kwargs)

    def http(self) -> httpx.AsyncClient:
        """A raw HTTP client for the bridge, authenticated with the master key."""
        return httpx.AsyncClient(
            base_url=self.bridge_url, headers={"Authorization": f"Bearer {MASTER_KEY}"}, timeout=30
        )

    async def start(self) -> Stack:
        self.grpc_server = await start_grpc(self.config)
        target = f"127.0.0.1:{self.grpc_server.port}"
        self.channel = grpc.aio.insecure_channel(target)
        port = free_port()
        self.http_server = uvicorn.Server(
            uvicorn.Config(create_app(target), host="127.0.0.1", port=port, log_level="warning", lifespan="on")
        )
        # uvicorn 0.54 installs its SIGINT/SIGTERM handlers in capture_signals();
        # a test process runs several servers, so none may take the signals.
        self.http_server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign]
        self.http_task = asyncio.create_task(self.http_server.serve())
        while not self.http_server.started:
            await asyncio.sleep(0.01)
        self.bridge_url = f"http://127.0.0.1:{port}"
        return self

    async def stop(self) -> None:
        if self.http_server is not None:
            self.http_server.should_exit = True
            await self.http_task
        if self.channel is not None:
            await self.channel.close()
        if self.grpc_server is not None:
            await self.grpc_server.stop(0)

    async def restart(self) -> None:
        await self.stop()
        await self.start()


async def start_stack(
    database_url: str, llm_base_url: str | None = None, llm_api_key: str | None = None, **kw: Any
) -> Stack:
    """Starts the gRPC server on a free port and the bridge in front of it."""
    config = Config(
        database_url=database_url,
        llm_base_url=llm_base_url,
        llm_api_key=llm_api_key,
        master_key=MASTER_KEY,
        grpc_addr="127.0.0.1:0",
        **kw,
    )
    return await Stack(config).start()
