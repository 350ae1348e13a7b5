"""Wires the layers together and runs the gRPC server (and, optionally, the bridge)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import signal
import socket
from collections.abc import Callable
from dataclasses import dataclass, replace

import grpc
from grpc_health.v1 import health, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from agentapi import v1 as pb
from agentapi.v1 import (
    agent_service_pb2,
    api_key_service_pb2,
    conversation_service_pb2,
    mcp_server_service_pb2,
    model_service_pb2,
    session_service_pb2,
    tenant_service_pb2,
    usage_service_pb2,
)
from server.api.agents import AgentServicer
from server.api.conversations import ConversationServicer
from server.api.idempotency import IdempotencyInterceptor
from server.api.interceptor import ApiInterceptor
from server.api.mcp_servers import McpServerServicer
from server.api.models import ModelServicer
from server.api.sessions import SessionServicer
from server.api.tenants import ApiKeyServicer, TenantServicer, UsageServicer
from server.config import Config, redact_url
from server.domain import limits
from server.domain.agents import AgentService
from server.domain.auth import Authenticator
from server.domain.catalog import Catalog
from server.domain.conversations import ConversationService
from server.domain.errors import AgentAPIError
from server.domain.idempotency import IdempotencyStore
from server.domain.mcp_servers import McpServerService
from server.domain.pagination import PageTokens
from server.domain.quota import QuotaGuard, make_storage
from server.domain.recovery import STALE_MARGIN_S, Recovery
from server.domain.retry import RetryPolicy
from server.domain.runs import TurnRunner
from server.domain.runs.event_log import EventLog
from server.domain.runs.live import LiveRuns
from server.domain.runs.mcp_tools import McpRunTools
from server.domain.sessions import SessionService
from server.domain.tenants import ApiKeyService, TenantService
from server.domain.transcripts import TranscriptService
from server.domain.usage import UsageService
from server.heap import freeze_startup_heap
from server.llm.offline import OfflineBackend
from server.llm.openai_compat import OpenAICompatibleBackend
from server.llm.types import ChatBackend
from server.observability import tracing
from server.observability.rpc import RequestObserver
from server.readiness import Readiness
from server.store.db import Database
from server.store.run_events import RunEventStore, RunReads
from server.tools.builtin import load_registry
from server.workers import bind_socket, port_in_use

log = logging.getLogger("agentapi")

SERVICE_NAMES = tuple(
    module.DESCRIPTOR.services_by_name[name].full_name
    for module, name in (
        (agent_service_pb2, "AgentService"),
        (conversation_service_pb2, "ConversationService"),
        (session_service_pb2, "SessionService"),
        (model_service_pb2, "ModelService"),
        (tenant_service_pb2, "TenantService"),
        (api_key_service_pb2, "ApiKeyService"),
        (usage_service_pb2, "UsageService"),
        (mcp_server_service_pb2, "McpServerService"),
    )
)


class ListenError(Exception):
    """A server cannot listen on its address (the port is in use, or the host
    is not an address of this machine); the message is one line for the operator."""


def _check_ports(config: Config, only: str | None) -> None:
    """Raises ListenError, before anything starts, when a configured port
    cannot be bound: grpc would log its own error line and raise a bare
    RuntimeError, uvicorn an OSError traceback. Workers share their ports
    (SO_REUSEPORT), which the parent checked once (``server.workers``)."""
    if config.workers > 1:
        return
    for name, addr in (("grpc", config.grpc_addr), ("http", config.http_addr)):
        if only in (None, name) and not addr.endswith(":0") and (problem := port_in_use(addr)):
            raise ListenError(problem)


def make_backend(config: Config) -> ChatBackend:
    """The upstream client, or the offline model when no base URL is set."""
    if not config.llm_base_url:
        return OfflineBackend()
    return OpenAICompatibleBackend(
        config.llm_base_url,
        config.llm_api_key,
        connect_timeout_s=config.upstream_connect_timeout_s,
        read_timeout_s=config.upstream_read_timeout_s,
    )


def make_live_runs(config: Config, db: Database) -> LiveRuns:
    """The event log and the live runs registry (Redis carries the live tail
    and cancel requests when ``config.redis_url`` is set)."""
    signals = None
    if config.redis_url:
        from server.store.redis_signals import RedisSignals

        signals = RedisSignals(config.redis_url, config.event_log_retention_s)
    store = RunEventStore(db)
    event_log = EventLog(store, config.event_log_flush_s, config.event_log_flush_bytes, tail=signals)
    return LiveRuns(event_log, store, RunReads(db), signals, config.event_log_poll_s, config.cancel_poll_s)


def derived_secret(config: Config, purpose: bytes) -> bytes:
    """A server secret for one purpose (page tokens, request hashes), derived
    from the master key: replicas sharing the key agree on it."""
    return hashlib.sha256(purpose + b":" + config.effective_master_key.encode()).digest()


def runner_id_for(config: Config, port: int) -> str:
    """``Config.effective_runner_id``, with the bound port in place of a ``:0``
    (a picked port is no stable identity, and two such servers must differ)."""
    if config.runner_id or not config.grpc_addr.endswith(":0"):
        return config.effective_runner_id
    return f"{socket.gethostname()}/{config.grpc_addr.rsplit(':', 1)[0]}:{port}"


@dataclass
class GrpcServer:
    """A started gRPC server with its resources; ``port`` is the bound port;
    ``local_port`` a loopback port of this process alone (the bridge's target
    when several workers share ``port``), or ``port``."""

    server: grpc.aio.Server
    port: int
    db: Database
    backend: ChatBackend
    health: health.aio.HealthServicer
    catalog: Catalog
    interceptor: ApiInterceptor
    recovery: Recovery
    sweeper: asyncio.Task[None]
    local_port: int = 0
    readiness: asyncio.Task[None] | None = None
    live: LiveRuns | None = None

    async def drain(self) -> None:
        """Reports NOT_SERVING and refuses new calls (UNAVAILABLE, SHUTTING_DOWN)."""
        self.interceptor.drain()
        await self.health.enter_graceful_shutdown()

    async def stop(self, grace_s: float) -> None:
        """Drains: calls in flight get ``grace_s`` seconds to finish, then are
        cancelled (a turn stores its reply CANCELLED) and awaited; then
        everything is released, so no row is left half-written."""
        await self.drain()

        async def calls() -> None:
            if not await self.interceptor.wait_idle(grace_s):
                cancelled = await self.interceptor.cancel_in_flight()
                log.warning("shutdown: cancelled %d calls still running after %.1f s", cancelled, grace_s)

        # Runs nobody follows (background, on_disconnect=continue) get the same grace.
        await asyncio.gather(calls(), *([self.live.shutdown(grace_s)] if self.live else []))
        background = [self.sweeper, *([self.readiness] if self.readiness else [])]
        for task in background:
            task.cancel()
        await self.server.stop(None)
        await asyncio.gather(*background, return_exceptions=True)
        with contextlib.suppress(AgentAPIError):
            await self.recovery.forget()
        await self.catalog.aclose()
        await self.backend.aclose()
        await self.db.dispose()


async def start_grpc(config: Config, local_port: bool = False) -> GrpcServer:
    """Builds every layer and starts serving on ``config.grpc_addr`` (port 0 picks one).

    With ``config.workers`` > 1 the port is bound with SO_REUSEPORT, shared by
    the workers; ``local_port`` also listens on a loopback port of its own
    (``GrpcServer.local_port``), so that this process's bridge calls this
    process's gRPC server rather than whichever worker the kernel picks."""
    limits.configure(config.limits)
    db = Database(config.database_url, config.db_connect_timeout_s, config.db_query_timeout_s, config.db_pool_timeout_s)
    backend = make_backend(config)
    secret = derived_secret(config, b"agentapi-page-token")
    tokens = PageTokens(secret)
    catalog = Catalog(backend, ttl_s=config.catalog_ttl_s)
    stale_after_s = config.max_turn_duration_s + config.shutdown_grace_s + STALE_MARGIN_S
    idempotency = IdempotencyStore(db, config.effective_runner_id, config.idempotency_retention_s, stale_after_s)
    interceptor = ApiInterceptor(Authenticator(db, config.effective_master_key, config.api_tokens))
    server = grpc.aio.server(
        # The first is the outermost: it authenticates, then idempotency runs as the caller.
        # Tracing (when on) and the request metrics and log wrap everything else.
        interceptors=[
            *tracing.grpc_server_interceptors(),
            RequestObserver(),
            interceptor,
            IdempotencyInterceptor(idempotency, derived_secret(config, b"idempotency-hash")),
        ],
        options=[
            ("grpc.so_reuseport", 1 if config.workers > 1 else 0),
            # gRPC refuses a larger request itself with RESOURCE_EXHAUSTED,
            # which callers take for a rate limit: receive whatever the bridge
            # may forward (the domain's limits then name the field that is too big).
            ("grpc.max_receive_message_length", config.limits.grpc_receive_bytes),
            # Replies are not bounded here (a page of messages, an export):
            # -1 is gRPC's own server default, stated so that no one lowers it
            # below the largest page without meaning to.
            ("grpc.max_send_message_length", -1),
        ],
    )
    try:
        port = server.add_insecure_port(config.grpc_addr)
    except RuntimeError as exc:  # taken between the check and now
        await db.dispose()
        await backend.aclose()
        raise ListenError(f"cannot listen on {config.grpc_addr}: {exc}") from exc
    own_port = server.add_insecure_port("127.0.0.1:0") if local_port else port
    runner_id = idempotency.runner_id = runner_id_for(config, port)
    live = make_live_runs(config, db)
    recovery = Recovery(
        db,
        runner_id,
        idempotency,
        stale_after_s,
        live_since=lambda: min(interceptor.live_since(), live.live_since()),
        dead_after_s=config.runner_dead_after_s,
    )
    try:  # before serving, so that no turn of this process can be taken for a lost one
        await recovery.at_startup()
    except AgentAPIError as exc:
        log.warning("crash recovery postponed, the database is unavailable: %s", exc)
    registry = load_registry(config.tool_modules)
    mcp_servers = McpServerService(db, tokens, config.secret_key, config.allow_stdio_mcp)
    agents = AgentService(db, tokens, frozenset(registry.names()))
    pb.add_AgentServiceServicer_to_server(AgentServicer(agents, catalog), server)
    pb.add_ConversationServiceServicer_to_server(ConversationServicer(ConversationService(db, tokens)), server)
    sessions = SessionService(db, tokens)
    turns = TurnRunner(
        db,
        backend,
        catalog,
        QuotaGuard(make_storage(config.redis_url)),
        runner_id=runner_id,
        policy=RetryPolicy(
            attempts=config.retry_attempts,
            initial_backoff_s=config.retry_initial_backoff_s,
            max_backoff_s=config.retry_max_backoff_s,
            attempt_timeout_s=config.attempt_timeout_s,
        ),
        max_turn_duration_s=config.max_turn_duration_s,
        registry=registry,
        mcp=McpRunTools(mcp_servers),
        tool_bounds=(config.tool_timeout_s, config.tool_max_output_bytes),
        router_model=config.router_model,
    )
    pb.add_SessionServiceServicer_to_server(
        SessionServicer(sessions, turns, TranscriptService(db, sessions, turns), live), server
    )
    pb.add_ModelServiceServicer_to_server(ModelServicer(catalog), server)
    pb.add_TenantServiceServicer_to_server(TenantServicer(TenantService(db, tokens)), server)
    pb.add_ApiKeyServiceServicer_to_server(ApiKeyServicer(ApiKeyService(db, tokens)), server)
    pb.add_UsageServiceServicer_to_server(UsageServicer(UsageService(db)), server)
    pb.add_McpServerServiceServicer_to_server(McpServerServicer(mcp_servers), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection((*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    readiness = Readiness(SERVICE_NAMES, db, health_servicer, config.readiness_interval_s)
    await readiness.check()  # before serving: health starts SERVING only if the database is ready
    await server.start()
    catalog.start()
    live.start()
    sweeper = asyncio.create_task(recovery.run(), name="agentapi-recovery")
    checker = asyncio.create_task(readiness.run(), name="agentapi-readiness")
    return GrpcServer(
        server, port, db, backend, health_servicer, catalog, interceptor, recovery, sweeper, own_port, checker, live
    )


def announce(config: Config, grpc_port: int | None, http_port: int | None) -> None:
    """Prints where agentapi listens (``None``: that server does not run), the upstream and the key."""
    if grpc_port is not None:
        print(f"agentapi gRPC listening on {config.grpc_addr.rsplit(':', 1)[0]}:{grpc_port}", flush=True)
    if http_port is not None:
        http = f"{config.http_addr.rsplit(':', 1)[0]}:{http_port}"
        print(f"agentapi JSON bridge listening on http://{http} (OpenAI base URL: http://{http}/v1)", flush=True)
        print(f"agentapi console: http://{http}/console/", flush=True)
    backend_name = redact_url(config.llm_base_url or "") or "the built-in offline model 'agentapi-offline'"
    print(f"agentapi upstream: {backend_name}; database: {redact_url(config.database_url)}", flush=True)
    loop_name = event_loop_name(config)
    print(f"agentapi event loop: {loop_name}", flush=True)
    if loop_name == "uvloop" and config.database_url.startswith("mysql"):
        log.warning(
            "uvloop with aiomysql: a MySQL connection that drops fails its request INTERNAL rather than"
            " UNAVAILABLE / DATABASE_UNAVAILABLE (aio-libs/aiomysql#966); AGENTAPI_EVENT_LOOP=asyncio avoids it"
        )
    if not config.master_key:
        print(f"agentapi development master key: {config.effective_master_key}", flush=True)


def _loop_factory(config: Config) -> Callable[[], asyncio.AbstractEventLoop] | None:
    if config.event_loop == "uvloop":
        try:
            import uvloop
        except ImportError:
            return None
        return uvloop.new_event_loop
    return None


def event_loop_name(config: Config) -> str:
    """The event loop ``run`` uses: ``asyncio``, or ``uvloop`` when configured and installed."""
    if config.event_loop != "uvloop":
        return "asyncio"
    return "uvloop" if _loop_factory(config) else "asyncio (uvloop is not installed: pip install 'agentapi[uvloop]')"


def run(config: Config, only: str | None = None, ready: Callable[[int | None, int | None], None] | None = None) -> None:
    """Runs :func:`serve` on the configured event loop (``config.event_loop``)."""
    with asyncio.Runner(loop_factory=_loop_factory(config)) as runner:
        runner.run(serve(config, only, ready))


async def serve(
    config: Config, only: str | None = None, ready: Callable[[int | None, int | None], None] | None = None
) -> None:
    """Runs the gRPC server and/or the bridge until SIGTERM or SIGINT. Once both
    serve, calls ``ready(grpc_port, http_port)`` (a worker tells its parent),
    or else prints where they listen."""
    import uvicorn

    from gateway.app import create_app
    from gateway.settings import BridgeSettings

    _check_ports(config, only)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    shared = config.workers > 1  # the ports are shared with the other workers (SO_REUSEPORT)
    grpc_server = None
    http_server = None
    http_port = None
    tasks = []
    if only in (None, "grpc"):
        grpc_server = await start_grpc(config, local_port=shared and only is None)
    if only in (None, "http"):
        try:
            sock = bind_socket(config.http_addr, reuse_port=shared)
        except OSError as exc:  # taken between the check and now
            if grpc_server is not None:
                await grpc_server.stop(0)
            raise ListenError(f"cannot listen on {config.http_addr}: {exc.strerror or exc}") from exc
        http_port = sock.getsockname()[1]
        grpc_target = config.grpc_addr if grpc_server is None else f"127.0.0.1:{grpc_server.local_port}"
        # The body limit is the server's setting (flag or AGENTAPI_MAX_REQUEST_BYTES); CORS is read from the env.
        app = create_app(grpc_target, replace(BridgeSettings.from_env(), max_request_bytes=config.max_request_bytes))
        host = config.http_addr.rsplit(":", 1)[0]
        http_server = uvicorn.Server(
            uvicorn.Config(
                app,
                host=host.strip("[]"),
                port=http_port,
                log_level="warning",
                log_config=None,  # uvicorn's records go through our handler (text or JSON, server/logs.py)
                lifespan="on",
                timeout_graceful_shutdown=max(1, round(config.shutdown_grace_s)),
            )
        )
        # SIGTERM is ours (drain gRPC first): uvicorn must not take the handler.
        http_server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign]
        tasks.append(asyncio.create_task(http_server.serve(sockets=[sock])))
        while not http_server.started and not tasks[0].done():
            await asyncio.sleep(0.005)
        if not http_server.started:
            await tasks[0]
            raise RuntimeError(f"the JSON bridge did not start on {config.http_addr}")
    grpc_port = None if grpc_server is None else grpc_server.port
    freeze_startup_heap()
    if ready is not None:
        ready(grpc_port, http_port)
    else:
        announce(config, grpc_port, http_port)
    await stop.wait()
    # SIGTERM: report NOT_SERVING and refuse new calls at once; calls in flight
    # (the bridge's included) get the grace period, then are cancelled.
    deadline = loop.time() + config.shutdown_grace_s
    log.info("shutting down: %.1f s for calls in flight", config.shutdown_grace_s)
    if grpc_server is not None:
        await grpc_server.drain()
    if http_server is not None:
        http_server.should_exit = True
        await asyncio.gather(*tasks, return_exceptions=True)
    if grpc_server is not None:
        await grpc_server.stop(max(0.0, deadline - loop.time()))
    log.info("stopped")
