"""A run's event log: every streamed event, numbered, appended in batches.

Appending is a list append on the turn's path; one flusher task per process
writes what accumulated, for every run at once, every ``flush_interval_s``
(200 ms) or as soon as ``flush_bytes`` (16 KiB) wait, whichever comes first:
one multi-row INSERT of chunks (one chunk per run per flush) plus one
checkpoint UPDATE per reply still streaming, so a crash loses at most the
last interval of a reply's text. The stored messages stay the source of
truth; the log makes the way there replayable (StreamTurn).

An event is stored as its serialized stream message (opaque bytes here),
framed by a 4-byte big-endian length, so a chunk is one BLOB.

With Redis (``AGENTAPI_REDIS_URL``) each flushed chunk is also added to the
run's Redis stream, which followers on other replicas block on; without it
they poll the table.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from server.domain.common import utcnow
from server.store.run_events import Checkpoint, Chunk, RunEventStore

log = logging.getLogger(__name__)

_LENGTH = struct.Struct(">I")
# A batch the database refused is retried at the next flush; past this many
# bytes waiting, the oldest are dropped (the messages keep the outcome).
MAX_BACKLOG_BYTES = 64 * 1024 * 1024


def frame(events: list[bytes]) -> bytes:
    """``events`` as one payload: each a 4-byte big-endian length, then the bytes."""
    return b"".join(_LENGTH.pack(len(e)) + e for e in events)


def unframe(payload: bytes) -> Iterator[bytes]:
    """The events of a payload built by :func:`frame`."""
    offset = 0
    while offset < len(payload):
        (size,) = _LENGTH.unpack_from(payload, offset)
        offset += 4
        yield payload[offset : offset + size]
        offset += size


@dataclass
class _Pending:
    """Events of one run not flushed yet."""

    tenant_id: str
    first_sequence: int
    events: list[bytes] = field(default_factory=list)
    terminal: bool = False

    @property
    def last_sequence(self) -> int:
        return self.first_sequence + len(self.events) - 1


class EventLog:
    """The process's buffered writer of event logs and reply checkpoints.

    ``checkpoint`` sources are callables returning a :class:`Checkpoint` (or
    None when nothing changed); they are called at each flush."""

    def __init__(
        self,
        store: RunEventStore,
        flush_interval_s: float = 0.2,
        flush_bytes: int = 16 * 1024,
        tail: Any = None,
    ) -> None:
        self.store = store
        self.flush_interval_s = flush_interval_s
        self.flush_bytes = flush_bytes
        self.tail = tail  # a RedisTail, or None
        self._pending: dict[str, _Pending] = {}
        self._size = 0
        self._checkpoints: dict[str, Callable[[], Checkpoint | None]] = {}
        self._wake = asyncio.Event()
        self._flushed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    def start(self) -> None:
        """Starts the flusher task."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="agentapi-event-log")

    def append(self, run_id: str, tenant_id: str, sequence: int, event: bytes, terminal: bool = False) -> None:
        """Queues event ``sequence`` of ``run_id`` (sequences of a run arrive in order)."""
        pending = self._pending.get(run_id)
        if pending is None:
            pending = self._pending[run_id] = _Pending(tenant_id, sequence)
        pending.events.append(event)
        pending.terminal = pending.terminal or terminal
        self._size += len(event) + 4
        if self._size >= self.flush_bytes and not self._wake.is_set():
            self._wake.set()

    def watch(self, run_id: str, source: Callable[[], Checkpoint | None]) -> None:
        """Checkpoints ``source()`` at each flush until :meth:`unwatch`."""
        self._checkpoints[run_id] = source

    def unwatch(self, run_id: str) -> None:
        """Stops checkpointing ``run_id`` (its reply's terminal write has the text)."""
        self._checkpoints.pop(run_id, None)

    def pending_after(self, run_id: str, after: int) -> bool:
        """Whether events of ``run_id`` after ``after`` wait unflushed here."""
        pending = self._pending.get(run_id)
        return pending is not None and pending.last_sequence > after

    async def _run(self) -> None:
        while True:
            try:
                async with asyncio.timeout(self.flush_interval_s):
                    await self._wake.wait()
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                await self.flush()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("event log flush failed; retrying at the next interval", exc_info=True)

    async def flush(self) -> None:
        """Writes every queued event and checkpoint now. On failure the events
        stay queued (bounded by ``MAX_BACKLOG_BYTES``) and the error is raised."""
        async with self._lock:
            taken, self._pending, size = self._pending, {}, self._size
            self._size = 0
            chunks = [
                Chunk(run_id, p.tenant_id, p.first_sequence, p.last_sequence, p.terminal, frame(p.events))
                for run_id, p in taken.items()
            ]
            checkpoints = [c for source in list(self._checkpoints.values()) if (c := source()) is not None]
            if not chunks and not checkpoints:
                return
            try:
                await self.store.write(chunks, checkpoints, utcnow())
            except BaseException:
                self._requeue(taken, size)
                raise
        if self.tail is not None and chunks:
            try:
                await self.tail.publish(chunks)
            except Exception:  # followers elsewhere fall back to polling the table
                log.warning("could not publish event log chunks to Redis", exc_info=True)

    def _requeue(self, taken: dict[str, _Pending], size: int) -> None:
        for run_id, pending in taken.items():
            newer = self._pending.get(run_id)
            if newer is not None:
                pending.events += newer.events
                pending.terminal = pending.terminal or newer.terminal
            self._pending[run_id] = pending
        self._size += size
        while self._size > MAX_BACKLOG_BYTES and self._pending:
            run_id = next(iter(self._pending))
            dropped = self._pending.pop(run_id)
            self._size -= sum(len(e) + 4 for e in dropped.events)
            log.error("event log backlog over %d bytes: dropped the queued events of run %s", MAX_BACKLOG_BYTES, run_id)

    async def read(self, run_id: str, tenant_id: str, after: int) -> tuple[list[tuple[int, bytes]], bool]:
        """The stored events of ``run_id`` after sequence ``after``, as
        (sequence, bytes), and whether the run's terminal event is among them."""
        events: list[tuple[int, bytes]] = []
        terminal = False
        for chunk in await self.store.read(run_id, tenant_id, after):
            for offset, data in enumerate(unframe(chunk.payload)):
                sequence = chunk.first_sequence + offset
                if sequence > after:
                    events.append((sequence, data))
            terminal = terminal or chunk.terminal
        return events, terminal

    async def close(self) -> None:
        """Stops the flusher after a last flush."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        try:
            await self.flush()
        except Exception:
            log.warning("the last event log flush failed", exc_info=True)
