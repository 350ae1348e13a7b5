"""Queries over ``idempotency_records`` (and the recovery of interrupted replies).

Like the other repositories they never commit: the domain owns the transaction.
Every state change is a conditional UPDATE or DELETE whose row count says who
won, so two replicas racing on one key cannot both believe they own it.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from server.store.models import IdempotencyRecordRow, MessageRow, ReplyCheckpointRow
from server.store.turns import orphan_claims, release_turns

IN_PROGRESS = "in_progress"
TOOL_OUTCOME_UNKNOWN = (
    "the run was interrupted while this tool call ran: its outcome is unknown, and it was not run again"
)
COMPLETED = "completed"
_R = IdempotencyRecordRow


class IdempotencyRepository:
    """Queries over ``idempotency_records``, keyed by (tenant_id, key)."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    def add(self, row: IdempotencyRecordRow) -> None:
        """Queues the insert of a new record (the primary key makes a second one fail)."""
        self.session.add(row)

    async def get(self, tenant_id: str, key: str) -> IdempotencyRecordRow | None:
        """The record, read from the database (never from the session's identity map)."""
        query = select(_R).where(_R.tenant_id == tenant_id, _R.key == key).execution_options(populate_existing=True)
        return (await self.session.execute(query)).scalar_one_or_none()

    async def finish(
        self,
        tenant_id: str,
        key: str,
        runner_id: str,
        response: bytes | None,
        error: dict[str, Any] | None,
        now: datetime,
    ) -> bool:
        """Stores the outcome of the in-progress record this runner owns; False if it is not that any more."""
        result = await self.session.execute(
            update(_R)
            .where(_R.tenant_id == tenant_id, _R.key == key, _R.state == IN_PROGRESS, _R.runner_id == runner_id)
            .values(state=COMPLETED, response=response, error=error, update_time=now)
        )
        return bool(result.rowcount)

    async def release(self, tenant_id: str, key: str, runner_id: str) -> bool:
        """Deletes the in-progress record this runner owns, so a retry runs afresh."""
        result = await self.session.execute(
            delete(_R).where(
                _R.tenant_id == tenant_id, _R.key == key, _R.state == IN_PROGRESS, _R.runner_id == runner_id
            )
        )
        return bool(result.rowcount)

    async def take_over(
        self, tenant_id: str, key: str, runner_id: str, stale_before: datetime, now: datetime, expire: datetime
    ) -> bool:
        """Claims an in-progress record untouched since ``stale_before`` (its
        runner died), if nobody else did first: the winner's update makes it fresh."""
        result = await self.session.execute(
            update(_R)
            .where(
                _R.tenant_id == tenant_id,
                _R.key == key,
                _R.state == IN_PROGRESS,
                _R.update_time < stale_before,
            )
            .values(runner_id=runner_id, update_time=now, create_time=now, expire_time=expire)
        )
        return bool(result.rowcount)

    async def delete_expired(self, tenant_id: str, key: str, now: datetime) -> bool:
        """Deletes this record if it has expired."""
        result = await self.session.execute(
            delete(_R).where(_R.tenant_id == tenant_id, _R.key == key, _R.expire_time <= now)
        )
        return bool(result.rowcount)

    async def release_runner(self, runner_id: str, before: datetime) -> int:
        """Deletes the in-progress records a runner that restarted claimed before ``before``. Returns how many."""
        result = await self.session.execute(
            delete(_R).where(_R.state == IN_PROGRESS, _R.runner_id == runner_id, _R.update_time < before)
        )
        return int(result.rowcount or 0)

    async def purge(self, now: datetime) -> int:
        """Deletes records past their retention. Returns how many."""
        result = await self.session.execute(delete(_R).where(_R.expire_time <= now))
        return int(result.rowcount or 0)


class InterruptedReplies:
    """Marks assistant replies left IN_PROGRESS by a dead process as FAILED."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def fail(
        self, error: dict[str, Any], now: datetime, runner_id: str | None = None, before: datetime | None = None
    ) -> int:
        """Fails the in-progress replies of ``runner_id``, or those created before
        ``before``; content and usage so far are kept; their sessions and budget
        reservations are freed. Returns how many."""
        # Find the rows with a plain (non-locking) read, then update them by
        # primary key. A ranged UPDATE over the status index would take
        # next-key locks on MariaDB and deadlock (1213) with turns inserting
        # their messages at the same moment; the usual sweep finds nothing and
        # so locks nothing at all.
        found = select(MessageRow.id, MessageRow.session_id, MessageRow.role).where(MessageRow.status == IN_PROGRESS)
        if runner_id is not None:
            found = found.where(MessageRow.runner_id == runner_id)
        if before is not None:
            found = found.where(MessageRow.create_time < before)
        rows = list(await self.session.execute(found))
        # Runs that died between two of their steps hold a session with no row in progress.
        orphans = await orphan_claims(self.session, runner_id, before)
        if orphans:
            await release_turns(self.session, orphans)
        if not rows:
            return 0
        replies = [(row.id, row.session_id) for row in rows if row.role != "tool"]
        tools = [row.id for row in rows if row.role == "tool"]
        count = 0
        if replies:
            query = update(MessageRow).where(
                MessageRow.id.in_([i for i, _ in replies]), MessageRow.status == IN_PROGRESS
            )
            # The text streamed up to the event log's last flush (reply_checkpoints).
            checkpoint = ReplyCheckpointRow.__table__
            saved = select(checkpoint.c.content).where(checkpoint.c.message_id == MessageRow.id).scalar_subquery()
            reasoning = (
                select(checkpoint.c.reasoning_content).where(checkpoint.c.message_id == MessageRow.id).scalar_subquery()
            )
            values = {
                "status": "failed",
                "error": error,
                "update_time": now,
                "content": func.coalesce(saved, MessageRow.content),
                "reasoning_content": func.coalesce(reasoning, MessageRow.reasoning_content),
            }
            count += (await self.session.execute(query.values(values))).rowcount
        if tools:
            # A server tool call cut off while it ran: it may or may not have
            # acted, and nothing runs it again; the model reads as much.
            unknown = {**error, "message": TOOL_OUTCOME_UNKNOWN}
            content = json.dumps({"error": {"reason": error["reason"], "message": TOOL_OUTCOME_UNKNOWN}})
            query = update(MessageRow).where(MessageRow.id.in_(tools), MessageRow.status == IN_PROGRESS)
            values = {"status": "failed", "error": unknown, "content": content, "update_time": now}
            count += (await self.session.execute(query.values(values))).rowcount
        # A run's session claim and reservation are held under its first
        # step's reply, which may have finished before the process died.
        await release_turns(self.session, replies, sessions={row.session_id for row in rows})
        return int(count or 0)
