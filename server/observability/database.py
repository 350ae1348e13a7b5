"""Database metrics (pool use, statement latency) and, with ``AGENTAPI_TRACE_SQL=1``
and tracing on, a span per statement from the maintained SQLAlchemy instrumentation.

Listeners are plain SQLAlchemy events on the engine and its pool: a counter
and a gauge move per checkout and checkin, and one histogram observation per
statement (its first keyword as the ``operation`` label).
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import event

from server.observability import metrics, tracing

_OPERATIONS = frozenset({"SELECT", "INSERT", "UPDATE", "DELETE", "BEGIN", "COMMIT", "ROLLBACK", "PRAGMA", "SET"})


def _operation(statement: str) -> str:
    word = statement.lstrip()[:8].split(None, 1)[0].upper() if statement.strip() else ""
    return word if word in _OPERATIONS else "other"


def instrument(engine: Any, pool_name: str = "main") -> None:
    """Adds the metrics listeners to an ``AsyncEngine`` (and SQL spans when asked)."""
    sync_engine = engine.sync_engine
    checked_out = metrics.DB_POOL_CHECKED_OUT.labels(pool_name)
    checkouts = metrics.DB_POOL_CHECKOUTS.labels(pool_name)
    latency = metrics.DB_STATEMENT_DURATION

    @event.listens_for(sync_engine.pool, "checkout")
    def _checkout(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        checked_out.inc()
        checkouts.inc()

    @event.listens_for(sync_engine.pool, "checkin")
    def _checkin(dbapi_connection: Any, record: Any) -> None:
        checked_out.dec()

    @event.listens_for(sync_engine, "before_cursor_execute")
    def _before(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        conn.info["agentapi_statement_started"] = time.perf_counter()

    @event.listens_for(sync_engine, "after_cursor_execute")
    def _after(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        started = conn.info.pop("agentapi_statement_started", None)
        if started is not None:
            latency.labels(_operation(statement)).observe(time.perf_counter() - started)

    if tracing.trace_sql():
        from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer
        from opentelemetry.metrics import NoOpMeterProvider
        from opentelemetry.trace import get_tracer

        tracer = get_tracer("opentelemetry.instrumentation.sqlalchemy", tracer_provider=tracing.provider())
        # The instrumentor's own entry point (SQLAlchemyInstrumentor().instrument) refuses
        # SQLAlchemy 2.1 by its declared range and wraps create_engine process-wide; its
        # EngineTracer, on this engine only, works on 2.1. Pool use is our own metric above.
        usage = NoOpMeterProvider().get_meter("agentapi").create_up_down_counter("db.client.connections.usage")
        EngineTracer(tracer, sync_engine, usage)
