"""Crash recovery: replies and idempotency keys left behind by a dead process.

A turn inserts its assistant reply IN_PROGRESS with the ``runner_id`` of the
process running it, and stores a terminal state at the end. A process killed
in between (SIGKILL, OOM, power) leaves the row IN_PROGRESS for ever, so:

* at start-up, a process fails the replies its own runner id left IN_PROGRESS
  (it cannot be running them: it just started), keeping the partial content,
  with the error ``{code: UNAVAILABLE, reason: INTERRUPTED}``, and releases the
  idempotency keys it held;
* periodically, any process fails IN_PROGRESS replies older than the longest a
  turn may run plus the shutdown grace and a margin (their replica never came
  back), releases stale idempotency keys and purges expired ones.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta

from server.domain.common import utcnow
from server.domain.errors import AgentAPIError
from server.domain.idempotency import IdempotencyStore
from server.store.db import Database
from server.store.idempotency import InterruptedReplies

log = logging.getLogger(__name__)

INTERRUPTED = {
    "code": "UNAVAILABLE",
    "reason": "INTERRUPTED",
    "message": "the server running this turn stopped before the reply finished; the partial reply is kept",
}
# Allowance for clock skew between replicas and for a terminal write in progress.
STALE_MARGIN_S = 60.0


class Recovery:
    """Fails interrupted replies and releases orphaned idempotency keys.

    Args:
        db: the database.
        runner_id: this process's ``Config.effective_runner_id``.
        idempotency: the idempotency store (its keys are recovered too).
        stale_after_s: age after which an IN_PROGRESS reply's process is taken
            to be gone (max turn duration + shutdown grace + margin).
    """

    def __init__(self, db: Database, runner_id: str, idempotency: IdempotencyStore, stale_after_s: float) -> None:
        self.db = db
        self.runner_id = runner_id
        self.idempotency = idempotency
        self.stale_after = timedelta(seconds=stale_after_s)
        self.started = utcnow()
        self.recovered = False

    @property
    def interval_s(self) -> float:
        """Seconds between two sweeps: a quarter of the staleness age, 1 s to 60 s."""
        return min(60.0, max(1.0, self.stale_after.total_seconds() / 4))

    async def at_startup(self) -> int:
        """Fails the replies this runner left IN_PROGRESS before this process
        started and releases its idempotency keys of then (so it is safe to
        retry while serving). Returns how many replies were failed."""
        async with self.db.session() as session:
            failed = await InterruptedReplies(session).fail(
                INTERRUPTED, utcnow(), runner_id=self.runner_id, before=self.started
            )
            await session.commit()
        released = await self.idempotency.recover(self.started)
        self.recovered = True
        if failed or released:
            log.warning(
                "recovered from an interrupted run of %s: %d replies marked INTERRUPTED, %d idempotency keys released",
                self.runner_id,
                failed,
                released,
            )
        return failed

    async def sweep(self, now: datetime | None = None) -> int:
        """Fails IN_PROGRESS replies of any runner older than the staleness age,
        releases stale idempotency keys and purges expired ones. Returns how
        many replies were failed."""
        now = now or utcnow()
        async with self.db.session() as session:
            failed = await InterruptedReplies(session).fail(INTERRUPTED, now, before=now - self.stale_after)
            await session.commit()
        released, purged = await self.idempotency.sweep(now)
        if failed or released or purged:
            log.warning(
                "sweep: %d abandoned replies marked INTERRUPTED, %d idempotency keys released, %d expired purged",
                failed,
                released,
                purged,
            )
        return failed

    async def run(self) -> None:
        """Sweeps every :attr:`interval_s` until cancelled (first finishing
        :meth:`at_startup` if the database was down then); a failed sweep is
        logged and retried at the next interval."""
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                if not self.recovered:
                    await self.at_startup()
                await self.sweep()
            except AgentAPIError as exc:
                log.warning("recovery sweep failed: %s", exc)
            except Exception:
                log.exception("recovery sweep failed")
