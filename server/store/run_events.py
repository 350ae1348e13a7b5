"""SQL for durable runs: the event log's chunks, content checkpoints of
running replies, cancel requests, and the purge of old logs.

Every statement here is Core (no ORM unit of work): the flusher writes many
runs' chunks in one INSERT, off the turns' latency path.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, insert, select
from sqlalchemy.dialects.mysql import insert as mysql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from server.store.db import Database
from server.store.models import MessageRow, ReplyCheckpointRow, RunCancellationRow, RunEventChunkRow, SessionRow


@dataclass(frozen=True)
class Chunk:
    """Events ``first_sequence``..``last_sequence`` of run ``run_id``, framed
    in ``payload``; ``terminal`` when it holds the run's last event."""

    run_id: str
    tenant_id: str
    first_sequence: int
    last_sequence: int
    terminal: bool
    payload: bytes


@dataclass(frozen=True)
class Checkpoint:
    """The text a running reply has streamed so far."""

    message_id: str
    content: str
    reasoning_content: str | None


_UPSERTS: dict[str, Any] = {}


def _upsert(dialect: str) -> Any:
    """INSERT ... ON DUPLICATE KEY UPDATE (MySQL) / ON CONFLICT DO UPDATE (SQLite)
    of ``reply_checkpoints``, built once: executed with a list of rows it is
    one multi-row statement from a cached compilation, however many rows."""
    if dialect not in _UPSERTS:
        table = ReplyCheckpointRow.__table__
        columns = ("content", "reasoning_content", "update_time")
        if dialect == "sqlite":
            statement = sqlite_insert(table)
            _UPSERTS[dialect] = statement.on_conflict_do_update(
                index_elements=[table.c.message_id], set_={name: statement.excluded[name] for name in columns}
            )
        else:
            statement = mysql_insert(table)
            _UPSERTS[dialect] = statement.on_duplicate_key_update({name: statement.inserted[name] for name in columns})
    return _UPSERTS[dialect]


class RunEventStore:
    """The event log's table, ``run_cancellations``, and the checkpoint UPDATE."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def write(self, chunks: Sequence[Chunk], checkpoints: Sequence[Checkpoint], now: datetime) -> None:
        """INSERTs ``chunks`` and upserts the replies' checkpoints: two
        statements and one COMMIT per flush, whatever the number of runs.
        Raises UNAVAILABLE (DATABASE_UNAVAILABLE)."""
        async with self.db.session() as session:
            if chunks:
                await session.execute(
                    insert(RunEventChunkRow),
                    [
                        {
                            "run_id": c.run_id,
                            "first_sequence": c.first_sequence,
                            "last_sequence": c.last_sequence,
                            "terminal": int(c.terminal),
                            "tenant_id": c.tenant_id,
                            "payload": c.payload,
                            "create_time": now,
                        }
                        for c in chunks
                    ],
                )
            if checkpoints:
                rows = [
                    {"message_id": c.message_id, "content": c.content, "reasoning_content": c.reasoning_content}
                    | {"update_time": now}
                    for c in checkpoints
                ]
                await session.execute(_upsert(session.bind.dialect.name), rows)
            await session.commit()

    async def read(self, run_id: str, tenant_id: str, after: int) -> list[Chunk]:
        """The chunks of ``run_id`` holding events after ``after``, in order."""
        table = RunEventChunkRow.__table__
        query = (
            select(table.c.first_sequence, table.c.last_sequence, table.c.terminal, table.c.payload)
            .where(table.c.run_id == run_id, table.c.tenant_id == tenant_id, table.c.last_sequence > after)
            .order_by(table.c.first_sequence)
        )
        async with self.db.session() as session:
            rows = (await session.execute(query)).all()
        return [Chunk(run_id, tenant_id, r[0], r[1], bool(r[2]), r[3]) for r in rows]

    async def has_log(self, run_id: str, tenant_id: str) -> bool:
        """Whether any chunk of ``run_id`` is stored."""
        table = RunEventChunkRow.__table__
        query = select(table.c.run_id).where(table.c.run_id == run_id, table.c.tenant_id == tenant_id).limit(1)
        async with self.db.session() as session:
            return (await session.execute(query)).first() is not None

    async def request_cancel(self, run_id: str, tenant_id: str, now: datetime) -> None:
        """Records that ``run_id`` should stop (idempotent)."""
        table = RunCancellationRow.__table__
        async with self.db.session() as session:
            if (await session.execute(select(table.c.run_id).where(table.c.run_id == run_id))).first() is None:
                await session.execute(insert(table).values(run_id=run_id, tenant_id=tenant_id, create_time=now))
                await session.commit()

    async def cancelled(self, run_ids: Sequence[str]) -> set[str]:
        """Which of ``run_ids`` someone asked to cancel."""
        table = RunCancellationRow.__table__
        async with self.db.session() as session:
            rows = await session.execute(select(table.c.run_id).where(table.c.run_id.in_(list(run_ids))))
            return {r[0] for r in rows}

    async def forget(self, message_ids: Sequence[str]) -> None:
        """Deletes the event logs of runs whose first reply is among
        ``message_ids``, and those messages' checkpoints (an erased turn)."""
        chunks, checkpoints = RunEventChunkRow.__table__, ReplyCheckpointRow.__table__
        async with self.db.session() as session:
            await session.execute(delete(chunks).where(chunks.c.run_id.in_(list(message_ids))))
            await session.execute(delete(checkpoints).where(checkpoints.c.message_id.in_(list(message_ids))))
            await session.commit()

    async def purge(self, finished_before: datetime, abandoned_before: datetime) -> int:
        """Deletes the logs of runs that ended before ``finished_before`` (their
        terminal chunk is older), chunks older than ``abandoned_before`` (runs
        that died without a terminal event), and old cancel requests.
        Returns the chunks deleted."""
        table = RunEventChunkRow.__table__
        async with self.db.session() as session:
            ended = select(table.c.run_id).where(table.c.terminal == 1, table.c.create_time < finished_before)
            run_ids = [r[0] for r in (await session.execute(ended)).all()]
            deleted = 0
            for start in range(0, len(run_ids), 500):
                result = await session.execute(delete(table).where(table.c.run_id.in_(run_ids[start : start + 500])))
                deleted += result.rowcount or 0
            result = await session.execute(delete(table).where(table.c.create_time < abandoned_before))
            deleted += result.rowcount or 0
            cancels = RunCancellationRow.__table__
            await session.execute(delete(cancels).where(cancels.c.create_time < abandoned_before))
            checkpoints = ReplyCheckpointRow.__table__
            await session.execute(delete(checkpoints).where(checkpoints.c.update_time < finished_before))
            await session.commit()
        return deleted


class RunReads:
    """The reads a follower of a run needs from the messages and sessions."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def message(self, session_id: str, message_id: str) -> MessageRow | None:
        """The message ``message_id`` of ``session_id``, or None."""
        async with self.db.session() as session:
            row = await session.get(MessageRow, message_id)
            return row if row is not None and row.session_id == session_id else None

    async def checkpoint(self, message_id: str) -> tuple[str, str | None] | None:
        """A streaming reply's (content, reasoning) at the last flush, or None."""
        table = ReplyCheckpointRow.__table__
        query = select(table.c.content, table.c.reasoning_content).where(table.c.message_id == message_id)
        async with self.db.session() as session:
            row = (await session.execute(query)).first()
        return (row[0], row[1]) if row is not None else None

    async def running(self, session_id: str, run_id: str) -> bool:
        """Whether ``run_id`` still holds its session (its claim is released
        with its last terminal write, or by recovery when its runner died)."""
        async with self.db.session() as session:
            held = await session.execute(select(SessionRow.active_reply_id).where(SessionRow.id == session_id))
            return held.scalar() == run_id

    async def last_reply(self, session_id: str, first: MessageRow) -> MessageRow:
        """The run's last assistant message: the latest of the assistant and
        tool messages that follow ``first`` (the run's first reply) before
        the next input."""
        query = (
            select(MessageRow)
            .where(MessageRow.session_id == session_id, MessageRow.sequence >= first.sequence)
            .order_by(MessageRow.sequence)
            .limit(1000)
        )
        last = first
        async with self.db.session() as session:
            for row in (await session.execute(query)).scalars():
                # A user message, or a client's tool output, begins the next turn.
                if row.role not in ("assistant", "tool") or (row.role == "tool" and not row.executor):
                    break
                if row.role == "assistant":
                    last = row
        return last
