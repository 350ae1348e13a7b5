"""Rate limits shared across two real agentapi processes through Redis."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
import redis
from grpc_health.v1 import health_pb2, health_pb2_grpc

from agentapi import v1 as pb
from tests.conftest import unavailable
from tests.helpers import error_reason, user
from tests.stack import AUTH, MASTER_KEY, free_port

REDIS_URL = os.environ.get("AGENTAPI_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
AGENTAPI = str(Path(sys.executable).parent / "agentapi")


async def _serving(port: int, process: subprocess.Popen[bytes]) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        for _ in range(300):
            if process.poll() is not None:
                raise RuntimeError(f"agentapi exited: {process.stderr.read().decode() if process.stderr else ''}")
            try:
                reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                await asyncio.sleep(0.05)
    raise RuntimeError("agentapi did not become ready")


@pytest.fixture
async def two_processes(sqlite_url: str) -> AsyncIterator[list[int]]:
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        unavailable(f"Redis not reachable at {REDIS_URL}: {exc}")
    ports = [free_port(), free_port()]
    processes = [
        subprocess.Popen(
            [
                AGENTAPI,
                "serve",
                "--only",
                "grpc",
                "--grpc-addr",
                f"127.0.0.1:{port}",
                "--database-url",
                sqlite_url,
                "--master-key",
                MASTER_KEY,
                "--redis-url",
                REDIS_URL,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )  # fmt: skip
        for port in ports
    ]
    try:
        for port, process in zip(ports, processes, strict=True):
            await _serving(port, process)
        yield ports
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=15)


async def test_two_processes_share_one_requests_per_minute_limit(two_processes: list[int]) -> None:
    channels = [grpc.aio.insecure_channel(f"127.0.0.1:{port}") for port in two_processes]
    try:
        first = pb.TenantServiceStub(channels[0])
        tenant_id = f"t-{uuid.uuid4().hex[:10]}"
        await first.CreateTenant(
            pb.CreateTenantRequest(tenant=pb.Tenant(id=tenant_id, rate_limits=pb.RateLimits(requests_per_minute=3))),
            metadata=AUTH,
        )
        key = await pb.ApiKeyServiceStub(channels[0]).CreateApiKey(
            pb.CreateApiKeyRequest(api_key=pb.ApiKey(tenant_id=tenant_id, scope=pb.API_KEY_SCOPE_CLIENT)), metadata=AUTH
        )
        auth = (("authorization", f"Bearer {key.secret}"),)
        outcomes = []
        for index in range(5):
            sessions = pb.SessionServiceStub(channels[index % 2])
            session = await sessions.CreateSession(
                pb.CreateSessionRequest(session=pb.Session(overrides=pb.SessionSettings(model="agentapi-offline"))),
                metadata=auth,
            )
            try:
                await sessions.SendMessage(
                    pb.SendMessageRequest(session_id=session.session.id, messages=[user("hi")]), metadata=auth
                )
                outcomes.append("ok")
            except grpc.aio.AioRpcError as exc:
                outcomes.append(error_reason(exc))
        assert outcomes == ["ok", "ok", "ok", "RATE_LIMITED", "RATE_LIMITED"]
    finally:
        for channel in channels:
            await channel.close()
