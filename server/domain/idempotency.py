"""Durable idempotency keys, with Stripe's semantics (and the IETF
Idempotency-Key draft's statuses).

* A key is 1 to 255 printable ASCII characters, scoped to the caller's tenant.
* The first request with a key inserts an ``in_progress`` record: the primary
  key (tenant, key) is what excludes a concurrent duplicate on any replica.
* The same key with another request (method or body) is INVALID_ARGUMENT
  (IDEMPOTENCY_KEY_REUSED); while the first still runs, ABORTED
  (IDEMPOTENCY_REQUEST_IN_FLIGHT); once it ended, its stored outcome is
  replayed without running anything again.
* A request that failed before it changed anything (no commit: a refused
  quota, an unavailable database, a busy session) releases its record, so a
  retry runs; anything else, failures included, is stored and replayed.
* A record whose runner died is released: at that runner's restart, and by
  any replica once it is older than the longest a request may run.
* Records expire ``retention_s`` after they were created and are purged.

This module stores opaque outcomes (serialized responses and an error dict);
server/api/idempotency.py decides what goes in them.
"""

from __future__ import annotations

import contextvars
import hashlib
import hmac
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.exc import IntegrityError

from server.domain.common import Principal, utcnow
from server.domain.errors import AgentAPIError, FieldViolation, invalid_argument
from server.store.db import Database, translate
from server.store.idempotency import COMPLETED, IN_PROGRESS, IdempotencyRepository
from server.store.models import IdempotencyRecordRow

log = logging.getLogger(__name__)

MAX_KEY_LENGTH = 255
_CLAIM_ATTEMPTS = 5
_current_key: contextvars.ContextVar[str | None] = contextvars.ContextVar("agentapi_idempotency_key", default=None)


def use_key(key: str | None) -> None:
    """Records, for the rest of this call (its task's context), the idempotency
    key it claimed; the turn stores it with its reply (see :func:`current_key`)."""
    _current_key.set(key)


def current_key() -> str | None:
    """The idempotency key this call claimed, or None. A turn stores it on its
    reply, so that a retry after a crash answers the stored input again."""
    return _current_key.get()


def check_key(key: str) -> str:
    """Returns ``key`` if it is 1 to 255 printable ASCII characters; else raises
    INVALID_ARGUMENT (IDEMPOTENCY_KEY_INVALID)."""
    if 0 < len(key) <= MAX_KEY_LENGTH and key.isascii() and key.isprintable():
        return key
    raise invalid_argument(
        "the idempotency key must be 1 to 255 printable ASCII characters",
        [FieldViolation("idempotency-key", "must be 1 to 255 printable ASCII characters")],
        reason="IDEMPOTENCY_KEY_INVALID",
    )


def request_hash(method: str, payload: bytes, key: bytes = b"") -> str:
    """HMAC-SHA-256 (hex) of the method name and the serialized request, keyed
    with a server secret: a request may hold secrets (an MCP server's header
    values), and a plain hash of a short one could be guessed from the record."""
    return hmac.new(key, method.encode() + b"\0" + payload, hashlib.sha256).hexdigest()


def encode_responses(responses: list[bytes]) -> bytes:
    """Serialized messages, each prefixed with its 4-byte big-endian length."""
    return b"".join(len(r).to_bytes(4, "big") + r for r in responses)


def decode_responses(blob: bytes | None) -> list[bytes]:
    """The inverse of :func:`encode_responses`."""
    out, position, data = [], 0, blob or b""
    while position < len(data):
        size = int.from_bytes(data[position : position + 4], "big")
        out.append(data[position + 4 : position + 4 + size])
        position += 4 + size
    return out


@dataclass(frozen=True)
class Claim:
    """This request owns the key: run it, then :meth:`IdempotencyStore.finish` or :meth:`~IdempotencyStore.release`."""

    tenant_id: str
    key: str


@dataclass(frozen=True)
class Outcome:
    """A stored outcome to replay: the responses, then the error (if any) the call ended with."""

    responses: list[bytes] = field(default_factory=list)
    error: dict[str, Any] | None = None


def in_flight(key: str) -> AgentAPIError:
    return AgentAPIError(
        "ABORTED",
        "IDEMPOTENCY_REQUEST_IN_FLIGHT",
        "a request with this idempotency key is still running; retry when it has finished",
        {"idempotency_key": key},
    )


def key_reused(key: str) -> AgentAPIError:
    return AgentAPIError(
        "INVALID_ARGUMENT",
        "IDEMPOTENCY_KEY_REUSED",
        "this idempotency key was used for a different request; use a new key",
        {"idempotency_key": key},
    )


class IdempotencyStore:
    """Claims keys, stores outcomes and releases records, in the database.

    Args:
        db: the database.
        runner_id: this process's id (``Config.effective_runner_id``).
        retention_s: how long a record is kept.
        stale_after_s: age after which an in-progress record's runner is taken
            to be dead (the longest a request may run, plus a margin).
    """

    def __init__(self, db: Database, runner_id: str, retention_s: float, stale_after_s: float) -> None:
        self.db = db
        self.runner_id = runner_id
        self.retention = timedelta(seconds=retention_s)
        self.stale_after = timedelta(seconds=stale_after_s)
        self._deferred: dict[Claim, tuple[list[bytes], dict[str, Any] | None, bool]] = {}

    async def begin(self, principal: Principal, key: str, method: str, digest: str) -> Claim | Outcome:
        """Claims ``key`` for this request, or returns the outcome to replay.
        Raises ABORTED (IDEMPOTENCY_REQUEST_IN_FLIGHT), INVALID_ARGUMENT
        (IDEMPOTENCY_KEY_REUSED) or UNAVAILABLE (DATABASE_UNAVAILABLE)."""
        tenant_id = principal.tenant_id
        for _ in range(_CLAIM_ATTEMPTS):
            now = utcnow()
            row = IdempotencyRecordRow(
                tenant_id=tenant_id,
                key=key,
                method=method,
                request_hash=digest,
                state=IN_PROGRESS,
                response=None,
                error=None,
                runner_id=self.runner_id,
                create_time=now,
                update_time=now,
                expire_time=now + self.retention,
            )
            try:
                async with self.db.session() as session:
                    IdempotencyRepository(session).add(row)
                    await session.commit()
                return Claim(tenant_id, key)
            except AgentAPIError as exc:
                if exc.code != "ALREADY_EXISTS":
                    raise
            except IntegrityError as exc:  # raised by the commit outside Database's translation
                error = translate(exc)
                if error.code != "ALREADY_EXISTS":
                    raise error from exc
            async with self.db.session() as session:
                repo = IdempotencyRepository(session)
                found = await repo.get(tenant_id, key)
                if found is None:
                    continue  # released in between: claim again
                if found.expire_time <= now:
                    await repo.delete_expired(tenant_id, key, now)
                    await session.commit()
                    continue
                if found.method != method or found.request_hash != digest:
                    raise key_reused(key)
                if found.state == COMPLETED:
                    return Outcome(_responses(found), found.error)
                stale_before = now - self.stale_after
                if found.update_time >= stale_before:
                    raise in_flight(key)
                if await repo.take_over(tenant_id, key, self.runner_id, stale_before, now, now + self.retention):
                    await session.commit()
                    log.warning("took over idempotency key %r of %s, whose runner is gone", key, found.runner_id)
                    return Claim(tenant_id, key)
        raise in_flight(key)

    async def settle(
        self, claim: Claim, responses: list[bytes], error: dict[str, Any] | None, release: bool = False
    ) -> None:
        """Stores the outcome of a claimed request for replays or, with
        ``release``, deletes its record so that a retry runs. When the
        database refuses, the outcome is kept in memory and retried by
        :meth:`settle_deferred` (until then the key answers IN_FLIGHT), and the
        error is raised."""
        try:
            async with self.db.session() as session:
                repo = IdempotencyRepository(session)
                if release:
                    await repo.release(claim.tenant_id, claim.key, self.runner_id)
                    stored = True
                else:
                    stored = await repo.finish(
                        claim.tenant_id, claim.key, self.runner_id, encode_responses(responses), error, utcnow()
                    )
                await session.commit()
        except Exception:
            self._deferred[claim] = (responses, error, release)
            raise
        self._deferred.pop(claim, None)
        if not stored:
            log.warning("idempotency key %r was released while its request ran; its outcome is not stored", claim.key)

    async def settle_deferred(self) -> int:
        """Retries the outcomes the database refused. Returns how many are now stored."""
        settled = 0
        for claim, (responses, error, release) in list(self._deferred.items()):
            await self.settle(claim, responses, error, release)
            settled += 1
        return settled

    async def recover(self, started: datetime) -> int:
        """At start-up: releases the records this runner held when it died
        (claimed before ``started``, this process's start)."""
        async with self.db.session() as session:
            released = await IdempotencyRepository(session).release_runner(self.runner_id, started)
            await session.commit()
        return released


async def purge_expired(db: Database, now: datetime | None = None) -> int:
    """Deletes idempotency records past their retention (``agentapi purge``)."""
    async with db.session() as session:
        purged = await IdempotencyRepository(session).purge(now or utcnow())
        await session.commit()
    return purged


def _responses(row: IdempotencyRecordRow) -> list[bytes]:
    return decode_responses(row.response)
