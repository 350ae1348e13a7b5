"""Admission of a turn, before the upstream is called: the session is claimed
(one turn at a time), the tenant's budget reserved, its rate limits counted.
And the retry of an interrupted turn, which answers the stored input again
rather than storing it twice."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from server.domain.catalog import Catalog
from server.domain.money import money
from server.domain.quota import QuotaGuard, Reservation
from server.domain.runs.failures import busy
from server.domain.runs.messages import InputMessage
from server.store.db import Database
from server.store.models import MessageRow, TenantRow
from server.store.turns import claim_session

# Stored errors of a reply that ended because agentapi failed, not the model or
# the caller: a retry with the same idempotency key answers that turn's input.
RETRYABLE_REASONS = frozenset({"INTERRUPTED", "DATABASE_UNAVAILABLE", "SHUTTING_DOWN"})


async def admit(
    db: Database,
    session: AsyncSession,
    quota: QuotaGuard,
    catalog: Catalog,
    tenant: TenantRow | None,
    reply: MessageRow,
    prompt_tokens: int,
    output_tokens: int | None,
) -> Reservation | None:
    """Claims the session for ``reply`` in ``session``'s transaction (its commit
    makes the claim durable, its rollback undoes it), reserves the tenant's
    budget (committed at once, see :meth:`QuotaGuard.reserve`) and counts its
    rate limits.

    Raises ABORTED (SESSION_BUSY) when another turn holds the session (on
    MySQL, after waiting for that turn's first commit: the claim's UPDATE
    locks the row), RESOURCE_EXHAUSTED (BUDGET_EXCEEDED, RATE_LIMITED) and
    UNAVAILABLE (DATABASE_UNAVAILABLE); nothing stays reserved when it raises."""

    async def claim() -> None:
        if not await claim_session(await session.connection(), reply.session_id, reply.id):
            raise busy(reply.session_id)

    async def price(prompt: int, output: int) -> Decimal | None:
        info = await catalog.find(reply.model)
        if info is None or not (info.input_cost_per_token or info.output_cost_per_token):
            return None
        return money(info.cost(prompt, output))

    reservation = None
    try:
        # MySQL: claim first, so a racing turn waits on the row lock and never
        # holds budget it cannot use. SQLite: claim last, because the claim
        # takes the single write lock that the reservation's own commit needs.
        if not db.local_writer:
            await claim()
        if tenant is not None:
            reservation = await quota.reserve(db, tenant, reply.id, prompt_tokens, output_tokens, price)
            await quota.admit(tenant)
        if db.local_writer:
            await claim()
    except BaseException:
        await asyncio.shield(quota.release(db, reservation))
        raise
    return reservation


def interrupted_input(history: Sequence[Any], inputs: Sequence[InputMessage], key: str | None) -> list[Any] | None:
    """The stored input messages of the turn that ``key`` ran last in this
    session, when that turn's reply is the session's last message and ended
    for one of :data:`RETRYABLE_REASONS` (a crash, a lost database, a
    shutdown) and the stored messages are ``inputs``; else None."""
    if not key or not history or not inputs:  # an approvals-only retry has no input to answer again
        return None
    last = history[-1]
    reason = (last.error or {}).get("reason") if isinstance(last.error, dict) else None
    if last.role != "assistant" or last.idempotency_key != key or reason not in RETRYABLE_REASONS:
        return None
    first = last.prompt_last_sequence - len(inputs)
    stored = [m for m in history if first < m.sequence <= last.prompt_last_sequence]
    if len(stored) != len(inputs):
        return None
    for row, message in zip(stored, inputs, strict=True):
        if (row.role, row.content, row.tool_call_id or "") != (message.role, message.text, message.tool_call_id or ""):
            return None
    return stored
