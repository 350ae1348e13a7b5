"""Per-tenant budgets (tokens and cost per day or month) and rate limits
(requests and tokens per minute).

Rate limits use the ``limits`` library's moving-window limiter: in Redis when
``AGENTAPI_REDIS_URL`` is set, so they hold across agentapi processes, else in
process memory.

Budgets hold under concurrency, across processes, in the database (Redis is not
used for them): before the upstream is called, a turn *reserves* what it may
spend, in one transaction that takes the tenant's row lock (MySQL) or the
single write lock (SQLite), so admissions of one tenant are serialised. The
rule: a turn is admitted when the period's recorded usage plus the other
running turns' reservations leave room for its prompt (tokens) and some money
(cost). It then reserves its prompt plus its output allowance (the turn's
``max_output_tokens``, else ``DEFAULT_OUTPUT_RESERVE``), and the cost of those
at the catalog's prices (none when the catalog has no price for the model:
then only recorded spend and the other turns' reservations count against the
money cap), each capped at the room left. The turn's terminal write replaces the
reservation by the recorded usage (in one transaction); recovery drops the
reservations of turns it fails. So a tenant exceeds its budget only by what
admitted turns spend beyond their reservation, which happens only to a turn
whose reservation was capped by the room left (the last one admitted) or
whose model wrote past its allowance.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from limits import RateLimitItemPerMinute
from limits.aio.storage import MemoryStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.storage import storage_from_string

from server.domain.common import utcnow
from server.domain.errors import AgentAPIError
from server.domain.money import ZERO, money
from server.store.accounts import UsageRepository
from server.store.db import Database
from server.store.models import TenantRow
from server.store.turns import BudgetRepository

# Output tokens a turn without max_output_tokens is taken to need.
DEFAULT_OUTPUT_RESERVE = 1024
# The price of (prompt tokens, output tokens) in US dollars; None when the model has none.
Pricer = Callable[[int, int], Awaitable[Decimal | None]]


@dataclass(frozen=True)
class Reservation:
    """What a running turn holds against its tenant's budget (see the module docstring)."""

    reply_id: str
    tokens: int
    cost_usd: Decimal


def period_bounds(now: datetime, period: str) -> tuple[datetime, datetime]:
    """The [start, end) of the UTC day or month containing ``now``."""
    if period == "day":
        start = now.replace(hour=0, minute=0, second=0, microsecond=0)
        return start, start + timedelta(days=1)
    start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = (start + timedelta(days=32)).replace(day=1)
    return start, end


def make_storage(redis_url: str | None) -> Storage:
    """Redis storage for ``redis://host:port/db`` URLs, else in-process memory."""
    if not redis_url:
        return MemoryStorage()
    uri = redis_url if redis_url.startswith("async+") else f"async+{redis_url}"
    return storage_from_string(uri, implementation="redispy")


class QuotaGuard:
    """Admits or refuses a tenant's turn before the upstream is called."""

    def __init__(self, storage: Storage) -> None:
        self.limiter = MovingWindowRateLimiter(storage)

    async def reserve(
        self,
        db: Database,
        tenant: TenantRow,
        reply_id: str,
        prompt_tokens: int,
        output_tokens: int | None,
        price: Pricer,
    ) -> Reservation | None:
        """Reserves the turn's share of the tenant's budget, committed before the
        upstream is called (see the module docstring for the rule); None when the
        tenant has no budget. ``output_tokens`` is the turn's max_output_tokens.

        Raises RESOURCE_EXHAUSTED (BUDGET_EXCEEDED; RetryInfo points at the
        period's end, the earliest the room grows for sure) and UNAVAILABLE
        (DATABASE_UNAVAILABLE)."""
        if tenant.max_tokens is None and tenant.max_cost_usd is None:
            return None
        wanted = prompt_tokens + (output_tokens or DEFAULT_OUTPUT_RESERVE)
        cost = await price(prompt_tokens, output_tokens or DEFAULT_OUTPUT_RESERVE)
        now = utcnow()
        start, end = period_bounds(now, tenant.budget_period)
        async with db.side_session() as session:
            budgets = BudgetRepository(session)
            await budgets.lock_tenant(tenant.id)
            # INSERT first: on SQLite it takes the write lock, so the sums below
            # cannot miss a reservation committed meanwhile.
            initial_cost = cost or ZERO
            await budgets.add(reply_id, tenant.id, wanted, initial_cost, now)
            used_tokens, used_cost = await UsageRepository(session).totals(tenant.id, start)
            held_tokens, held_cost = await budgets.reserved(tenant.id)
            held_tokens, held_cost = held_tokens - wanted, held_cost - initial_cost
            over, tokens = [], wanted
            if tenant.max_tokens is not None:
                room = tenant.max_tokens - used_tokens - held_tokens
                if prompt_tokens > room:
                    over.append(
                        f"tokens {used_tokens} used + {held_tokens} reserved + {prompt_tokens} > {tenant.max_tokens}"
                    )
                tokens = min(wanted, room)
            if tenant.max_cost_usd is not None:
                room_usd = money(tenant.max_cost_usd) - used_cost - held_cost
                if room_usd <= 0:
                    over.append(f"cost ${used_cost} used + ${held_cost} reserved >= ${tenant.max_cost_usd}")
                cost = None if cost is None else min(cost, room_usd)
            if over:
                raise AgentAPIError(
                    "RESOURCE_EXHAUSTED",
                    "BUDGET_EXCEEDED",
                    f"tenant {tenant.id!r} reached its {tenant.budget_period}ly budget: {'; '.join(over)}",
                    {"tenant_id": tenant.id, "period_end": end.isoformat() + "Z"},
                    retry_after_s=(end - now).total_seconds(),
                )
            cost = cost or ZERO
            if tokens != wanted or cost != initial_cost:
                await budgets.resize(reply_id, tokens, cost)
            await session.commit()
        return Reservation(reply_id, tokens, cost)

    async def check_step(self, db: Database, tenant: TenantRow, run_reply_id: str) -> None:
        """Before a run's next model step: the tenant's rate limits (a step is
        a request) and room left in its budget, counting what is recorded
        (this run's earlier steps too) and the other turns' reservations.
        Raises RESOURCE_EXHAUSTED (RATE_LIMITED, BUDGET_EXCEEDED)."""
        await self.admit(tenant)
        if tenant.max_tokens is None and tenant.max_cost_usd is None:
            return
        now = utcnow()
        start, end = period_bounds(now, tenant.budget_period)
        async with db.side_session() as session:
            used_tokens, used_cost = await UsageRepository(session).totals(tenant.id, start)
            held_tokens, held_cost = await BudgetRepository(session).reserved(tenant.id, excluding=run_reply_id)
        over = []
        if tenant.max_tokens is not None and used_tokens + held_tokens >= tenant.max_tokens:
            over.append(f"tokens {used_tokens} used + {held_tokens} reserved >= {tenant.max_tokens}")
        if tenant.max_cost_usd is not None and used_cost + held_cost >= money(tenant.max_cost_usd):
            over.append(f"cost ${used_cost} used + ${held_cost} reserved >= ${tenant.max_cost_usd}")
        if over:
            raise AgentAPIError(
                "RESOURCE_EXHAUSTED",
                "BUDGET_EXCEEDED",
                f"tenant {tenant.id!r} reached its {tenant.budget_period}ly budget before the run's next step: "
                + "; ".join(over),
                {"tenant_id": tenant.id, "period_end": end.isoformat() + "Z"},
                retry_after_s=(end - now).total_seconds(),
            )

    @staticmethod
    async def release(db: Database, reservation: Reservation | None) -> None:
        """Drops a reservation whose turn ended before its terminal write (a
        refused rate limit, a busy session, a failed first commit)."""
        if reservation is None:
            return
        async with db.side_session() as session:
            await BudgetRepository(session).remove(reservation.reply_id)
            await session.commit()

    async def admit(self, tenant: TenantRow) -> None:
        """Counts one request against ``requests_per_minute`` and checks that the
        minute's tokens are under ``tokens_per_minute``. Raises
        RESOURCE_EXHAUSTED (RATE_LIMITED) with RetryInfo."""
        if tenant.requests_per_minute:
            item = RateLimitItemPerMinute(tenant.requests_per_minute)
            if not await self.limiter.hit(item, "rpm", tenant.id):
                await self._refuse(item, "rpm", tenant, "requests per minute")
        if tenant.tokens_per_minute:
            item = RateLimitItemPerMinute(tenant.tokens_per_minute)
            if not await self.limiter.test(item, "tpm", tenant.id):
                await self._refuse(item, "tpm", tenant, "tokens per minute")

    async def record_tokens(self, tenant: TenantRow, tokens: int) -> None:
        """Counts a finished turn's tokens against ``tokens_per_minute``."""
        if tenant.tokens_per_minute and tokens > 0:
            item = RateLimitItemPerMinute(tenant.tokens_per_minute)
            # A moving window refuses a hit larger than the limit; cap it so the window fills.
            await self.limiter.hit(item, "tpm", tenant.id, cost=min(tokens, tenant.tokens_per_minute))

    async def _refuse(self, item: RateLimitItemPerMinute, kind: str, tenant: TenantRow, what: str) -> None:
        stats = await self.limiter.get_window_stats(item, kind, tenant.id)
        retry_after = max(0.0, stats.reset_time - time.time())
        raise AgentAPIError(
            "RESOURCE_EXHAUSTED",
            "RATE_LIMITED",
            f"tenant {tenant.id!r} is over its limit of {item.amount} {what}",
            {"tenant_id": tenant.id, "limit": kind},
            retry_after_s=retry_after,
        )
