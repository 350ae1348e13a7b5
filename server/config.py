"""Configuration: a frozen dataclass read from ``AGENTAPI_*`` environment
variables, which the CLI's flags override."""

from __future__ import annotations

import ipaddress
import os
import socket
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit, urlunsplit

from server.domain.limits import MAXIMUM as LIMIT_MAXIMUM
from server.domain.limits import MINIMUM as LIMIT_MINIMUM
from server.domain.limits import SETTINGS as LIMIT_SETTINGS
from server.domain.limits import Limits
from server.tools.builtin import load_registry

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./var/agentapi.db"
DEV_MASTER_KEY = "sk-agentapi-dev"
_LIMITS = Limits()


@dataclass(frozen=True)
class Config:
    """Everything the server needs to start.

    Attributes:
        database_url: SQLAlchemy async URL (``sqlite+aiosqlite:///...`` or
            ``mysql+aiomysql://user:pass@host/db``).
        llm_base_url: OpenAI-compatible base URL (a LiteLLM proxy, e.g.
            ``http://127.0.0.1:4000/v1``); None selects the offline model.
        llm_api_key: key sent to the upstream.
        master_key: admin key of the default tenant; None means the
            development key, allowed only on loopback addresses.
        api_tokens: extra static client keys of the default tenant.
        redis_url: ``redis://host:port/db`` for rate limits shared across
            processes; None counts in process memory.
        grpc_addr: ``host:port`` of the gRPC server.
        http_addr: ``host:port`` of the JSON bridge.
        upstream_connect_timeout_s: seconds to connect to the upstream.
        upstream_read_timeout_s: longest upstream silence, in seconds.
        catalog_ttl_s: seconds the model catalog is cached.
        shutdown_grace_s: seconds in-flight calls get on SIGTERM.
        runner_id: names this process in the ledger (``messages.runner_id``), so
            that on restart it finds the turns it was running when it died;
            stable across restarts of one replica (default: host name and gRPC
            address), distinct between replicas.
        max_turn_duration_s: longest a turn may run, whatever the caller's deadline.
        retry_attempts: upstream attempts per model before moving to a
            fallback model (retryable failures before the first delta only).
        retry_initial_backoff_s: pause before the second attempt; each later
            pause doubles, up to ``retry_max_backoff_s``, with full jitter.
        retry_max_backoff_s: longest pause between attempts.
        attempt_timeout_s: longest wait for an attempt's first delta, in seconds
            (then UPSTREAM_TIMEOUT, and the next attempt or model).
        idempotency_retention_s: how long idempotency records are kept.
        workers: processes serving the same gRPC and bridge ports (SO_REUSEPORT);
            each is its own runner (``<runner id>/w<index>``). 1 serves in
            this process.
        event_loop: ``asyncio`` (the default) or ``uvloop`` (when installed; with
            aiomysql, a MySQL connection that drops fails a request INTERNAL
            rather than UNAVAILABLE under uvloop, aio-libs/aiomysql#966).
        tool_modules: AGENTAPI_TOOL_MODULES, modules whose ``TOOLS`` join
            the built-in tool registry (server/tools/builtin.py).
        tool_timeout_s, tool_max_output_bytes: bounds of each built-in tool
            call, in seconds and bytes of UTF-8 output.
        router_model: AGENTAPI_ROUTER_MODEL, the model of the classifier call
            of auto-routed turns; empty uses the turn's own model.
        secret_key: AGENTAPI_SECRET_KEY, from which the key that encrypts
            stored secrets (MCP header and env values) is derived; None
            refuses to store any. Changing it makes stored secrets unreadable.
        allow_stdio_mcp: AGENTAPI_ALLOW_STDIO_MCP=1 lets operators register
            stdio MCP servers, commands that agentapi starts on its own host.
        db_connect_timeout_s: longest wait to open a MySQL connection (TCP and
            handshake), in seconds.
        db_query_timeout_s: longest wait for the MySQL server's reply to a
            statement (per packet), in seconds; then the connection is closed and
            the call fails UNAVAILABLE (DATABASE_UNAVAILABLE).
        db_pool_timeout_s: longest wait for a free pooled connection, in seconds.
        runner_dead_after_s: a runner whose heartbeat is older than this, in
            seconds, is dead: any replica reclaims its turns.
        readiness_interval_s: seconds between two readiness checks of the
            database (reachable, migrated to head), which set gRPC health.
        max_*: size limits (``AGENTAPI_MAX_*``), one per field of
            :class:`server.domain.limits.Limits`, which documents each; the
            :attr:`limits` property gathers them.
        log_level: ``debug``, ``info``, ``warning`` or ``error``.
        log_format: ``text`` (one human-readable line per record) or ``json``
            (one JSON object per line).
    """

    # Secrets stay out of repr(), so a logged Config shows none of them.
    database_url: str = field(default=DEFAULT_DATABASE_URL, repr=False)
    llm_base_url: str | None = None
    llm_api_key: str | None = field(default=None, repr=False)
    master_key: str | None = field(default=None, repr=False)
    api_tokens: tuple[str, ...] = field(default_factory=tuple, repr=False)
    redis_url: str | None = field(default=None, repr=False)
    grpc_addr: str = "127.0.0.1:50051"
    http_addr: str = "127.0.0.1:8080"
    upstream_connect_timeout_s: float = 5.0
    upstream_read_timeout_s: float = 60.0
    catalog_ttl_s: float = 60.0
    shutdown_grace_s: float = 10.0
    runner_id: str = ""
    max_turn_duration_s: float = 600.0
    retry_attempts: int = 2
    retry_initial_backoff_s: float = 0.2
    retry_max_backoff_s: float = 2.0
    attempt_timeout_s: float = 30.0
    idempotency_retention_s: float = 24 * 3600.0
    workers: int = 1
    event_loop: str = "asyncio"
    # Server-side tools: modules whose TOOLS join the built-in registry, and each call's bounds.
    tool_modules: tuple[str, ...] = field(default_factory=tuple)
    tool_timeout_s: float = 30.0
    tool_max_output_bytes: int = 64 * 1024
    # The classifier model of auto-routed turns ('' : the turn's own model).
    router_model: str = ""
    # MCP servers (server/domain/mcp_servers.py).
    secret_key: str | None = field(default=None, repr=False)
    allow_stdio_mcp: bool = False
    # Database faults, readiness and runner liveness.
    db_connect_timeout_s: float = 5.0
    db_query_timeout_s: float = 10.0
    db_pool_timeout_s: float = 5.0
    runner_dead_after_s: float = 30.0
    readiness_interval_s: float = 2.0
    # Durable runs (issue 16): the event log's flush cadence and size trigger,
    # how long a finished run's log is kept, and the followers' and cancel polls.
    event_log_flush_s: float = 0.2
    event_log_flush_bytes: int = 16 * 1024
    event_log_retention_s: float = 3600.0
    event_log_poll_s: float = 0.25
    cancel_poll_s: float = 1.0
    # Size limits and logging (issue 13, sections 3 and 6): one block.
    max_messages_per_request: int = _LIMITS.messages_per_request
    max_message_chars: int = _LIMITS.message_chars
    max_metadata_keys: int = _LIMITS.metadata_keys
    max_metadata_bytes: int = _LIMITS.metadata_bytes
    max_tools: int = _LIMITS.tools
    max_tool_schema_bytes: int = _LIMITS.tool_schema_bytes
    max_history_messages: int = _LIMITS.history_messages
    max_filter_chars: int = _LIMITS.filter_chars
    max_filter_depth: int = _LIMITS.filter_depth
    max_request_bytes: int = _LIMITS.request_bytes
    log_level: str = "info"
    log_format: str = "text"

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: object) -> Config:
        """Reads ``AGENTAPI_*`` variables; non-None ``overrides`` win."""
        env = os.environ if environ is None else environ
        values: dict[str, object] = {
            "database_url": env.get("AGENTAPI_DATABASE_URL") or DEFAULT_DATABASE_URL,
            "llm_base_url": env.get("AGENTAPI_LLM_BASE_URL") or None,
            "llm_api_key": env.get("AGENTAPI_LLM_API_KEY") or None,
            "master_key": env.get("AGENTAPI_MASTER_KEY") or None,
            "api_tokens": tuple(t.strip() for t in env.get("AGENTAPI_API_TOKENS", "").split(",") if t.strip()),
            "redis_url": env.get("AGENTAPI_REDIS_URL") or None,
            "grpc_addr": env.get("AGENTAPI_GRPC_ADDR") or "127.0.0.1:50051",
            "http_addr": env.get("AGENTAPI_HTTP_ADDR") or "127.0.0.1:8080",
            "runner_id": env.get("AGENTAPI_RUNNER_ID") or "",
            "event_loop": env.get("AGENTAPI_EVENT_LOOP") or "asyncio",
            "tool_modules": tuple(m.strip() for m in env.get("AGENTAPI_TOOL_MODULES", "").split(",") if m.strip()),
            "router_model": env.get("AGENTAPI_ROUTER_MODEL") or "",
            # MCP servers: the secrets key and the stdio switch.
            "secret_key": env.get("AGENTAPI_SECRET_KEY") or None,
            "allow_stdio_mcp": env.get("AGENTAPI_ALLOW_STDIO_MCP", "").strip().lower() in ("1", "true", "yes"),
            "log_level": (env.get("AGENTAPI_LOG_LEVEL") or "info").lower(),
            "log_format": (env.get("AGENTAPI_LOG_FORMAT") or "text").lower(),
        }
        for name, type_ in _NUMERIC_SETTINGS.items():
            raw = env.get(f"AGENTAPI_{name.upper()}")
            if raw:
                try:
                    values[name] = type_(raw)
                except ValueError:
                    kind = "a whole number" if type_ is int else "a number"
                    raise ValueError(f"AGENTAPI_{name.upper()} must be {kind}, not {raw!r}") from None
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]

    @property
    def secrets(self) -> tuple[str, ...]:
        """Every configured secret (keys, URL passwords), for the log filter
        that masks them (``server/logs.py``)."""
        values = [self.llm_api_key, self.master_key, self.secret_key, *self.api_tokens]
        for url in (self.database_url, self.redis_url, self.llm_base_url):
            if url and "://" in url:
                try:
                    password = urlsplit(url).password
                except ValueError:  # a port that is not a number: nothing to take from it
                    password = None
                if password:  # as written, and %-decoded as a driver would quote it
                    values += [password, unquote(password)]
        return tuple(dict.fromkeys(v for v in values if v))

    @property
    def limits(self) -> Limits:
        """The size limits, from the ``max_*`` fields."""
        return Limits(**{name: getattr(self, f"max_{name}") for name in Limits.__dataclass_fields__})

    @property
    def effective_runner_id(self) -> str:
        """``runner_id``, or ``<host name>/<gRPC address>`` when unset."""
        return self.runner_id or f"{socket.gethostname()}/{self.grpc_addr}"

    @property
    def effective_master_key(self) -> str:
        """The master key, or the development key when none is configured."""
        return self.master_key or DEV_MASTER_KEY

    def check_settings(self) -> None:
        """Raises ValueError for a size limit out of range or an unknown log
        level or format (what every command needs, not only ``serve``)."""
        for name in Limits.__dataclass_fields__:
            value = getattr(self, f"max_{name}")
            low, high = LIMIT_MINIMUM[name], LIMIT_MAXIMUM.get(name)
            if value < low or (high is not None and value > high):
                bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
                raise ValueError(f"{LIMIT_SETTINGS[name]} must be {bounds}, not {value}")
        if self.log_level not in LOG_LEVELS:
            raise ValueError(f"unknown log level {self.log_level!r}: choose one of {', '.join(LOG_LEVELS)}")
        if self.log_format not in LOG_FORMATS:
            raise ValueError(f"unknown log format {self.log_format!r}: choose one of {', '.join(LOG_FORMATS)}")

    def check(self, only: str | None = None) -> None:
        """Raises ValueError for :meth:`check_settings`' reasons, when a
        non-loopback address would use the development key, for an unknown
        event loop, and when several workers would listen on a picked port
        (``:0``): workers share one known port. ``only`` is
        ``serve --only`` (the other server's address is not checked for that)."""
        for module in self.tool_modules:  # at start, not at a tool's first call
            try:
                load_registry([module])
            except (ImportError, AttributeError, ValueError, TypeError) as exc:
                raise ValueError(f"AGENTAPI_TOOL_MODULES: cannot load tools from {module!r}: {exc}") from exc
        self.check_settings()
        if self.event_loop not in EVENT_LOOPS:
            raise ValueError(f"unknown event loop {self.event_loop!r}: choose one of {', '.join(EVENT_LOOPS)}")
        if self.workers < 1:
            raise ValueError(f"workers must be at least 1, not {self.workers}")
        if self.workers > 1:
            for name, addr in (("grpc", self.grpc_addr), ("http", self.http_addr)):
                if only in (None, name) and addr.rsplit(":", 1)[-1] == "0":
                    raise ValueError(
                        f"{self.workers} workers share one port: {addr} would give each its own, set a fixed port"
                    )
        if self.master_key:
            return
        for addr in (self.grpc_addr, self.http_addr):
            host = addr.rsplit(":", 1)[0].strip("[]")
            if not _is_loopback(host):
                raise ValueError(f"refusing to listen on {addr} with the development key: set AGENTAPI_MASTER_KEY")


EVENT_LOOPS = ("asyncio", "uvloop")
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("text", "json")


# Numeric settings read from AGENTAPI_<NAME> (for example AGENTAPI_RETRY_ATTEMPTS=3).
_NUMERIC_SETTINGS: dict[str, type] = {
    "event_log_flush_s": float,
    "event_log_flush_bytes": int,
    "event_log_retention_s": float,
    "event_log_poll_s": float,
    "cancel_poll_s": float,
    "upstream_connect_timeout_s": float,
    "upstream_read_timeout_s": float,
    "catalog_ttl_s": float,
    "shutdown_grace_s": float,
    "max_turn_duration_s": float,
    "retry_attempts": int,
    "retry_initial_backoff_s": float,
    "retry_max_backoff_s": float,
    "attempt_timeout_s": float,
    "idempotency_retention_s": float,
    "workers": int,
    "tool_timeout_s": float,
    "tool_max_output_bytes": int,
    "db_connect_timeout_s": float,
    "db_query_timeout_s": float,
    "db_pool_timeout_s": float,
    "runner_dead_after_s": float,
    "readiness_interval_s": float,
    **{f"max_{name}": int for name in Limits.__dataclass_fields__},
}


def redact_url(url: str) -> str:
    """``url`` with any password in it masked (``***``), for printing and
    logging: a database URL (SQLAlchemy's ``render_as_string(hide_password=True)``)
    or an http(s) URL with credentials."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    if "://" not in url:
        return url
    if url.split("://", 1)[0] in ("http", "https", "redis", "rediss"):
        parts = urlsplit(url)
        if parts.password is None:
            return url
        netloc = parts.netloc.rsplit("@", 1)[1]
        return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{netloc}"))
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:  # not a URL SQLAlchemy reads: show none of it
        return "<unreadable URL>"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
