"""Readiness: gRPC health follows the database (reachable, migrated to the
head revision), and ``agentapi serve`` refuses an unmigrated database."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from grpc_health.v1 import health, health_pb2

from server.config import Config
from server.domain.errors import AgentAPIError
from server.store.db import Database
from server.store.migrate import schema_problem

log = logging.getLogger(__name__)


class Readiness:
    """Keeps gRPC health (the overall status and every service's) SERVING only
    while the database answers and is migrated to the head revision, checked
    every ``interval_s`` seconds in the background; NOT_SERVING otherwise,
    with the reason logged once per change. After a shutdown began, health
    stays NOT_SERVING (the health servicer ignores later changes)."""

    def __init__(
        self, service_names: Sequence[str], db: Database, servicer: health.aio.HealthServicer, interval_s: float
    ) -> None:
        self.service_names = tuple(service_names)
        self.db = db
        self.servicer = servicer
        self.interval_s = interval_s
        self.problem: str | None = "not checked yet"

    async def check(self) -> str | None:
        """What keeps this replica from serving, or None; and sets health to match."""
        try:
            async with asyncio.timeout(max(5.0, self.interval_s)):
                problem = await schema_problem(self.db)
        except (AgentAPIError, TimeoutError) as exc:
            problem = f"the database is unavailable: {getattr(exc, 'message', None) or 'no answer'}"
        if problem != self.problem:
            if problem is None:
                log.info("ready: the database answers and is migrated")
            else:
                log.warning("not ready (health NOT_SERVING): %s", problem)
        self.problem = problem
        status = (
            health_pb2.HealthCheckResponse.SERVING if problem is None else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ("", *self.service_names):
            await self.servicer.set(name, status)
        return problem

    async def run(self) -> None:
        """Until cancelled: :meth:`check` every ``interval_s`` seconds."""
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.check()
            except Exception:
                log.exception("readiness check failed")


def unmigrated(config: Config) -> str | None:
    """Before ``agentapi serve``: one line saying to run ``agentapi migrate`` when
    the database is reachable but not at the head revision; None when it is,
    or when it cannot be checked (unreachable: the server starts NOT_SERVING
    and serves once the database answers; a URL it cannot use: the server's
    own start reports it)."""

    async def check() -> str | None:
        db = Database(config.database_url, config.db_connect_timeout_s, config.db_query_timeout_s)
        try:
            return await schema_problem(db)
        finally:
            await db.dispose()

    try:
        return asyncio.run(check())
    except AgentAPIError as exc:
        log.warning("could not check the schema at start: %s", exc.message)
    except Exception as exc:  # e.g. an unknown dialect: serving fails on it, with its own message
        log.debug("could not check the schema at start", exc_info=exc)
    return None
