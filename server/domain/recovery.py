"""Crash recovery: replies and idempotency keys left behind by a dead process,
or by a request whose last write the database lost.

A turn inserts its assistant reply IN_PROGRESS with the ``runner_id`` of the
process running it, and stores a terminal state at the end. A process killed
in between (SIGKILL, OOM, power) leaves the row IN_PROGRESS for ever, and so
does a turn whose terminal write failed because the database went away (the
caller got UNAVAILABLE; the session would stay busy). So:

* at start-up, a process fails the replies its own runner id left IN_PROGRESS
  before it started (it cannot be running them), keeping what was stored, with
  the error ``{code: UNAVAILABLE, reason: INTERRUPTED}``, and releases the
  idempotency keys it held then;
* every few seconds it does the same for its replies older than its oldest
  call in flight (``live_since``): no call of this process can own them any
  more; and stores the idempotency outcomes the database refused earlier;
* every few seconds it writes its heartbeat (``runners`` row) and reclaims the
  turns of any runner whose heartbeat is older than ``dead_after_s``
  (``AGENTAPI_RUNNER_DEAD_AFTER_S``): a replica that died, or came back under
  another runner id, frees its sessions within about that time. Heartbeats
  are written with each replica's clock: keep the clocks within a fraction of
  ``dead_after_s`` (NTP does);
* periodically, any process fails IN_PROGRESS replies of any runner older than
  the longest a turn may run plus the shutdown grace and a margin (a runner
  from before heartbeats, say), drops budget reservations as old, and purges
  expired idempotency records.

Failing a reply also frees its session and drops its budget reservation
(:class:`~server.store.idempotency.InterruptedReplies`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from server.domain.common import utcnow
from server.domain.errors import AgentAPIError
from server.domain.idempotency import IdempotencyStore, purge_expired
from server.store.db import Database
from server.store.idempotency import IdempotencyRepository, InterruptedReplies
from server.store.turns import BudgetRepository, RunnerRepository

log = logging.getLogger(__name__)

INTERRUPTED = {
    "code": "UNAVAILABLE",
    "reason": "INTERRUPTED",
    "message": "the server running this turn stopped before the reply finished; the stored part is kept",
}
# Allowance for clock skew between replicas and for a terminal write in progress.
STALE_MARGIN_S = 60.0
# Seconds between two reclaims of this runner's own abandoned rows, and two heartbeats.
RECLAIM_INTERVAL_S = 2.0
DEFAULT_DEAD_AFTER_S = 30.0
# Seconds before the next try after a failed one (the database was down).
RETRY_INTERVAL_S = 0.5


class Recovery:
    """Fails interrupted replies and releases orphaned idempotency keys.

    Args:
        db: the database.
        runner_id: this process's ``Config.effective_runner_id``.
        idempotency: the idempotency store (its keys are recovered too).
        stale_after_s: age after which an IN_PROGRESS reply's process is taken
            to be gone (max turn duration + shutdown grace + margin).
        live_since: the start (naive UTC) of this process's oldest call in
            flight, or now when there is none (``ApiInterceptor.live_since``).
        dead_after_s: a runner whose heartbeat is older than this is dead;
            more than :data:`RECLAIM_INTERVAL_S`.
    """

    def __init__(
        self,
        db: Database,
        runner_id: str,
        idempotency: IdempotencyStore,
        stale_after_s: float,
        live_since: Callable[[], datetime] = utcnow,
        dead_after_s: float = DEFAULT_DEAD_AFTER_S,
    ) -> None:
        self.db = db
        self.runner_id = runner_id
        self.idempotency = idempotency
        self.stale_after = timedelta(seconds=stale_after_s)
        self.live_since = live_since
        self.dead_after = timedelta(seconds=max(dead_after_s, 2 * RECLAIM_INTERVAL_S))
        self.started = utcnow()
        self.recovered = False

    @property
    def interval_s(self) -> float:
        """Seconds between two sweeps of every runner's rows: a quarter of the staleness age, 1 s to 60 s."""
        return min(60.0, max(1.0, self.stale_after.total_seconds() / 4))

    async def reclaim(self, before: datetime, startup: bool = False) -> tuple[int, int]:
        """Fails this runner's IN_PROGRESS replies created before ``before``;
        then, at start-up, releases its idempotency keys claimed before then,
        and otherwise stores the outcomes the database refused earlier (see
        :meth:`IdempotencyStore.settle`). Returns (replies failed, keys settled)."""
        async with self.db.session() as session:
            failed = await InterruptedReplies(session).fail(
                INTERRUPTED, utcnow(), runner_id=self.runner_id, before=before
            )
            await session.commit()
        released = await (self.idempotency.recover(before) if startup else self.idempotency.settle_deferred())
        if failed or released:
            log.warning(
                "%s: %d unfinished replies marked INTERRUPTED, %d idempotency keys released",
                self.runner_id,
                failed,
                released,
            )
        return failed, released

    async def at_startup(self) -> int:
        """Reclaims what this runner left before this process started (safe to
        retry while serving). Returns how many replies were failed."""
        await self.beat()
        failed, _ = await self.reclaim(self.started, startup=True)
        self.recovered = True
        return failed

    async def sweep(self, now: datetime | None = None) -> int:
        """Fails IN_PROGRESS replies of any runner older than the staleness age
        and purges expired idempotency records (a stale in-progress key is
        taken over by the next request that uses it). Returns how many
        replies were failed."""
        now = now or utcnow()
        async with self.db.session() as session:
            failed = await InterruptedReplies(session).fail(INTERRUPTED, now, before=now - self.stale_after)
            await BudgetRepository(session).purge(now - self.stale_after)
            await session.commit()
        purged = await purge_expired(self.db, now)
        if failed or purged:
            log.warning(
                "sweep: %d abandoned replies marked INTERRUPTED, %d expired idempotency records purged", failed, purged
            )
        return failed

    async def beat(self) -> None:
        """Writes this runner's heartbeat."""
        async with self.db.session() as session:
            await RunnerRepository(session).beat(self.runner_id, utcnow(), self.started)
            await session.commit()

    async def forget(self) -> None:
        """Deletes this runner's heartbeat row (a clean shutdown: it left no turn behind)."""
        async with self.db.session() as session:
            await RunnerRepository(session).forget(self.runner_id)
            await session.commit()

    async def reclaim_dead(self, now: datetime | None = None) -> int:
        """Reclaims the turns of every other runner whose heartbeat is older than
        ``dead_after_s``: fails its IN_PROGRESS replies (INTERRUPTED, freeing
        their sessions and budget reservations) and releases its idempotency
        keys, in one transaction that also deletes its heartbeat row, so one
        replica does it. Returns how many replies were failed."""
        now = now or utcnow()
        cutoff = now - self.dead_after
        async with self.db.session() as session:
            silent = await RunnerRepository(session).silent_since(cutoff)
        failed_total = 0
        for runner_id in silent:
            if runner_id == self.runner_id:
                continue  # this process is alive; its heartbeat was only late
            async with self.db.session() as session:
                if not await RunnerRepository(session).bury(runner_id, cutoff):
                    continue  # another replica did it, or the runner came back
                failed = await InterruptedReplies(session).fail(INTERRUPTED, now, runner_id=runner_id, before=now)
                released = await IdempotencyRepository(session).release_runner(runner_id, now)
                await session.commit()
            failed_total += failed
            log.warning(
                "runner %s silent for over %.0f s: %d unfinished replies marked INTERRUPTED,"
                " %d idempotency keys released",
                runner_id,
                self.dead_after.total_seconds(),
                failed,
                released,
            )
        return failed_total

    async def run(self) -> None:
        """Until cancelled: reclaims this runner's abandoned rows every
        :data:`RECLAIM_INTERVAL_S` (finishing :meth:`at_startup` first if the
        database was down then) and sweeps every :attr:`interval_s`. A failure
        (the database is down) is logged and retried after
        :data:`RETRY_INTERVAL_S`: the turns whose terminal write the outage lost
        hold their sessions until reclaimed, so that happens soon after the
        database is back."""
        last_sweep = asyncio.get_running_loop().time()
        pause = RECLAIM_INTERVAL_S
        while True:
            await asyncio.sleep(pause)
            pause = RETRY_INTERVAL_S
            try:
                if not self.recovered:
                    await self.at_startup()
                await self.reclaim(self.live_since())
                await self.beat()
                await self.reclaim_dead()
                if asyncio.get_running_loop().time() - last_sweep >= self.interval_s:
                    last_sweep = asyncio.get_running_loop().time()
                    await self.sweep()
                pause = RECLAIM_INTERVAL_S
            except AgentAPIError as exc:
                log.warning("recovery failed, will retry: %s", exc)
            except Exception:
                log.exception("recovery failed, will retry")
