"""Per-tenant budgets (tokens and cost per day or month) and rate limits
(requests and tokens per minute).

Rate limits use the ``limits`` library's moving-window limiter: in Redis when
``AGENTAPI_REDIS_URL`` is set, so they hold across agentapi processes, else in
process memory. Budgets are summed from the usage ledger in the database, so
they hold across processes without Redis.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta

from limits import RateLimitItemPerMinute
from limits.aio.storage import MemoryStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.storage import storage_from_string

from server.domain.common import utcnow
from server.domain.errors import AgentAPIError
from server.store.accounts import UsageRepository
from server.store.models import TenantRow


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

    async def check_budget(self, usage: UsageRepository, tenant: TenantRow, prompt_tokens: int) -> None:
        """Raises RESOURCE_EXHAUSTED (BUDGET_EXCEEDED) when the period's tokens
        plus this prompt would pass ``max_tokens``, or the spend has reached
        ``max_cost_usd``; RetryInfo points at the period's end."""
        if tenant.max_tokens is None and tenant.max_cost_usd is None:
            return
        now = utcnow()
        start, end = period_bounds(now, tenant.budget_period)
        tokens, cost = await usage.totals(tenant.id, start)
        over = []
        if tenant.max_tokens is not None and tokens + prompt_tokens > tenant.max_tokens:
            over.append(f"tokens {tokens} + {prompt_tokens} > {tenant.max_tokens}")
        if tenant.max_cost_usd is not None and cost >= tenant.max_cost_usd:
            over.append(f"cost ${cost:.6f} >= ${tenant.max_cost_usd}")
        if over:
            raise AgentAPIError(
                "RESOURCE_EXHAUSTED",
                "BUDGET_EXCEEDED",
                f"tenant {tenant.id!r} reached its {tenant.budget_period}ly budget: {'; '.join(over)}",
                {"tenant_id": tenant.id, "period_end": end.isoformat() + "Z"},
                retry_after_s=(end - now).total_seconds(),
            )

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
