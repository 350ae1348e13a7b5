"""Observability: traces (OpenTelemetry), metrics (Prometheus) and the request log.

The layers call only the small API of these modules: ``tracing`` (set-up,
propagation), ``runs`` (a run's spans and metrics), ``metrics`` (the
Prometheus metrics and ``/metrics``), ``rpc`` (the gRPC interceptor),
``request_log`` (one line per request) and ``database`` (pool and statement
metrics, SQL spans). See docs/observability.md.
"""

from __future__ import annotations

import logging
import os

from server.observability import tracing

log = logging.getLogger(__name__)


def setup() -> bool:
    """Per process (each worker too): turns tracing on when an exporter is
    configured by the ``OTEL_*`` environment, with a span per SQL statement
    when ``AGENTAPI_TRACE_SQL=1``. Returns whether tracing is on."""
    trace_sql = os.environ.get("AGENTAPI_TRACE_SQL", "").strip().lower() in ("1", "true", "yes")
    on = tracing.setup(trace_sql=trace_sql)
    if on:
        log.info("tracing on: spans exported as OTEL_* configures (docs/observability.md)")
    return on
