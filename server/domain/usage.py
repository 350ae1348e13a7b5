"""Usage reports from the ledger: tokens and cost recorded on assistant messages."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from server.domain.common import Principal, utcnow
from server.domain.errors import Violations, not_found
from server.store.accounts import UsageRepository
from server.store.db import Database

DIMENSIONS = ("tenant", "agent", "session", "model", "day")


class UsageService:
    """Aggregates usage by tenant, agent, session, model and UTC day."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def report(
        self,
        principal: Principal,
        tenant_id: str,
        start: datetime | None,
        end: datetime | None,
        group_by: list[str],
    ) -> list[dict[str, Any]]:
        """Rows with ``turns``, ``prompt_tokens``, ``completion_tokens`` and
        ``cost_usd`` per group over [start, end). A client sees only its tenant;
        another tenant's id answers NOT_FOUND (TENANT_NOT_FOUND). Raises
        INVALID_ARGUMENT for an unknown dimension or start >= end."""
        violations = Violations()
        for index, dimension in enumerate(group_by):
            if dimension not in DIMENSIONS:
                violations.add(f"group_by[{index}]", f"must be one of {', '.join(DIMENSIONS)}")
        end = end or utcnow()
        if start is not None and start >= end:
            violations.add("start_time", "must be before end_time")
        violations.raise_if_any()
        scope: str | None
        if principal.operator:
            scope = tenant_id or None
        else:
            if tenant_id and tenant_id != principal.tenant_id:
                raise not_found("tenant", tenant_id)
            scope = principal.tenant_id
        async with self.db.session() as session:
            return await UsageRepository(session).grouped(scope, start, end, list(dict.fromkeys(group_by)))
