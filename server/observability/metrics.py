"""Prometheus metrics (prometheus-client), served as ``GET /metrics`` on the bridge port.

Every metric of agentapi is declared here; docs/observability.md lists them
with their meaning. Label values are bounded: methods, routes, models, tools,
tenants and agents come from sets the operator controls (never a message,
session or request id), and :func:`bounded` caps each label at
``MAX_LABEL_VALUES`` distinct values, later ones counting as ``other``.

With ``--workers N`` the parent points ``PROMETHEUS_MULTIPROC_DIR`` at a fresh
directory before it spawns the workers (:func:`prepare_multiprocess`): each
worker writes its samples to memory-mapped files there, and whichever worker
answers ``/metrics`` sums all of them (prometheus-client's multiprocess mode),
so a scrape is right whichever worker the kernel hands the connection to.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
MAX_LABEL_VALUES = 200
OTHER = "other"

_seen: dict[str, set[str]] = {}
_seen_lock = threading.Lock()


def bounded(kind: str, value: str) -> str:
    """``value`` as a label of ``kind`` (model, tool, tenant, agent, route), or
    ``other`` once ``MAX_LABEL_VALUES`` distinct values of that kind were seen;
    ``-`` for an empty value."""
    if not value:
        return "-"
    values = _seen.get(kind)
    if values is not None and value in values:
        return value
    with _seen_lock:
        values = _seen.setdefault(kind, set())
        if value in values:
            return value
        if len(values) >= MAX_LABEL_VALUES:
            return OTHER
        values.add(value)
        return value


_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
# The GenAI semantic conventions' advised buckets for these two metrics.
_TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
_TPOT_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5)
_GENAI = ("gen_ai_operation_name", "gen_ai_provider_name", "gen_ai_request_model")

# Requests.
RPC_REQUESTS = Counter("agentapi_rpc_requests", "gRPC calls served, by method and status code", ("method", "code"))
RPC_DURATION = Histogram(
    "agentapi_rpc_duration_seconds", "gRPC call duration, by method", ("method",), buckets=_LATENCY_BUCKETS
)
HTTP_REQUESTS = Counter(
    "agentapi_http_requests",
    "bridge HTTP requests, by method, route template and status",
    ("method", "route", "status"),
)
HTTP_DURATION = Histogram(
    "agentapi_http_request_duration_seconds",
    "bridge HTTP request duration (to the response's end), by method and route template",
    ("method", "route"),
    buckets=_LATENCY_BUCKETS,
)
OPEN_STREAMS = Gauge(
    "agentapi_open_streams",
    "streams open now: gRPC server streams and SSE responses",
    ("server",),
    multiprocess_mode="livesum",
)
ERRORS = Counter("agentapi_errors", "failed gRPC calls and runs, by ErrorInfo reason", ("reason",))
REFUSALS = Counter(
    "agentapi_refusals", "turns or steps refused by a tenant's budget or rate limit, by reason", ("reason",)
)

# Runs.
RUNS_IN_FLIGHT = Gauge("agentapi_runs_in_flight", "runs (turns) executing now", multiprocess_mode="livesum")
RUN_DURATION = Histogram(
    "agentapi_run_duration_seconds",
    "a run from acceptance to its final event, by final status",
    ("status",),
    buckets=_LATENCY_BUCKETS,
)
RUN_STEPS = Histogram(
    "agentapi_run_steps", "model steps per run, by final status", ("status",), buckets=(1, 2, 3, 4, 5, 6, 8, 12, 16, 32)
)
TTFT = Histogram(
    "gen_ai_server_time_to_first_token_seconds",
    "time to first token of a model step, from its start (the run's acceptance for step 1)",
    _GENAI,
    buckets=_TTFT_BUCKETS,
)
TPOT = Histogram(
    "gen_ai_server_time_per_output_token_seconds",
    "time per output token after the first, of a model step",
    _GENAI,
    buckets=_TPOT_BUCKETS,
)
TOKENS = Counter(
    "agentapi_tokens", "tokens of model steps, by tenant, agent, model and type", ("tenant", "agent", "model", "type")
)
COST = Counter(
    "agentapi_cost_usd", "cost of model steps in US dollars, by tenant, agent and model", ("tenant", "agent", "model")
)
ATTEMPTS = Counter(
    "agentapi_upstream_attempts",
    "upstream attempts, by model and outcome (ok, or the failure's reason)",
    ("model", "outcome"),
)
RETRIES = Counter(
    "agentapi_upstream_retries", "attempts retried on the same model, by model and reason", ("model", "reason")
)
FALLBACKS = Counter(
    "agentapi_upstream_fallbacks",
    "moves to the next fallback model, by the failed model and reason",
    ("model", "reason"),
)
TOOL_CALLS = Counter(
    "agentapi_tool_calls", "server tool calls, by tool, executor and outcome", ("tool", "executor", "outcome")
)
TOOL_DURATION = Histogram(
    "agentapi_tool_call_duration_seconds",
    "server tool call duration, by tool, executor and outcome",
    ("tool", "executor", "outcome"),
    buckets=_LATENCY_BUCKETS,
)

# Database.
DB_POOL_CHECKED_OUT = Gauge(
    "agentapi_db_pool_checked_out",
    "database connections checked out of the pool now",
    ("pool",),
    multiprocess_mode="livesum",
)
DB_POOL_CHECKOUTS = Counter("agentapi_db_pool_checkouts", "connections taken from the pool", ("pool",))
DB_STATEMENT_DURATION = Histogram(
    "agentapi_db_statement_duration_seconds",
    "SQL statement latency (execute to cursor result), by operation",
    ("operation",),
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0),
)


def prepare_multiprocess() -> str | None:
    """In the parent of ``--workers``: a fresh ``PROMETHEUS_MULTIPROC_DIR`` for
    the workers it spawns (they inherit the environment); returns the
    directory this call created (None when the operator set one)."""
    given = os.environ.get(MULTIPROC_ENV)
    if given:
        os.makedirs(given, exist_ok=True)
        return None
    path = tempfile.mkdtemp(prefix="agentapi-metrics-")
    os.environ[MULTIPROC_ENV] = path
    return path


def process_dead(pid: int | None) -> None:
    """Drops a dead worker's live gauges (its counters and histograms stay in the sums)."""
    if pid is not None and os.environ.get(MULTIPROC_ENV):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)


def cleanup(path: str | None) -> None:
    """Removes the directory :func:`prepare_multiprocess` created."""
    if path:
        shutil.rmtree(path, ignore_errors=True)
        if os.environ.get(MULTIPROC_ENV) == path:
            del os.environ[MULTIPROC_ENV]


def exposition() -> tuple[bytes, str]:
    """The text exposition of every metric (all workers' when in multiprocess mode) and its content type."""
    if os.environ.get(MULTIPROC_ENV):
        from prometheus_client import multiprocess

        registry: Any = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    return generate_latest(registry), CONTENT_TYPE_LATEST
