"""Runs that outlive their caller's stream: each run is driven by a task of
its own, and any number of followers read its numbered events.

A :class:`RunHandle` keeps the events of a live run in memory (the caller's
stream and any rejoiner on this replica read them there, with no delay) and
appends each to the event log (:mod:`.event_log`). Followers on other
replicas, and anyone after the run, read the log (:meth:`LiveRuns.follow`).

What a caller's disconnect does is the follower's choice: ``cancel`` (the
default) stops the run, which stores its reply CANCELLED; ``continue`` (and
every background run) leaves it running.

Cancel from anywhere (:meth:`LiveRuns.cancel`): the run's replica is told
through Redis when configured, and always through ``run_cancellations``,
which each replica polls for its own runs every ``cancel_poll_s``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from datetime import datetime
from typing import Any

from server.domain.common import Principal, require_uuid, utcnow
from server.domain.errors import AgentAPIError, not_found
from server.domain.runs.event_log import EventLog, unframe
from server.domain.runs.events import TurnEvent
from server.domain.runs.failures import SHUTDOWN_CANCEL, TURN_CANCEL, stop_reason
from server.store.models import MessageRow
from server.store.run_events import Checkpoint, RunEventStore, RunReads

log = logging.getLogger(__name__)

# (event, sequence number) -> the stream message sent to followers and logged.
Encoder = Callable[[TurnEvent, int], Any]


class RunHandle:
    """One run on this replica: its events so far (``events[i]`` has sequence
    number ``i + 1``), whether it ended, and the error its stream ends with."""

    def __init__(self, runs: LiveRuns, tenant_id: str, encode: Encoder) -> None:
        self.runs = runs
        self.tenant_id = tenant_id
        self.encode = encode
        self.run_id = ""
        self.session_id = ""
        self.events: list[Any] = []
        self.error: BaseException | None = None
        self.done = False
        self.task: asyncio.Task[None] | None = None
        self.logged = False
        self._waiter: asyncio.Future[None] | None = None
        self.reply: MessageRow | None = None  # the step's reply being streamed, for checkpoints
        self.text: list[str] = []
        self.reasoning: list[str] = []
        self._checkpointed = (0, 0)

    # --- the producer side (the run's task) ---------------------------------

    def _publish(self, event: TurnEvent, terminal: bool = False) -> None:
        sequence = len(self.events) + 1
        message = self.encode(event, sequence)
        self.events.append(message)
        if self.logged:
            self.runs.log.append(self.run_id, self.tenant_id, sequence, message.SerializeToString(), terminal)
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def _track(self, event: TurnEvent) -> None:
        """Keeps the streamed text of the current step's reply for checkpoints."""
        reply = event.message
        if reply is not None and reply is not self.reply:
            self.reply, self.text, self.reasoning, self._checkpointed = reply, [], [], (0, 0)
        if event.delta is not None:
            if event.delta.content:
                self.text.append(event.delta.content)
            if event.delta.reasoning:
                self.reasoning.append(event.delta.reasoning)

    def checkpoint(self) -> Checkpoint | None:
        """The current reply's text when it grew since the last checkpoint."""
        reply = self.reply
        counts = (len(self.text), len(self.reasoning))
        if reply is None or counts == self._checkpointed:
            return None
        self._checkpointed = counts
        reasoning = "".join(self.reasoning) or None
        return Checkpoint(reply.id, "".join(self.text), reasoning)

    async def drive(self, events: AsyncIterator[TurnEvent]) -> None:
        """Runs the run to its end, publishing every event. A cancelled run
        ends with its stored reply as the final event."""
        cancelled: BaseException | None = None
        try:
            async with aclosing(events):
                async for event in events:
                    if event.kind == "started" and not self.run_id:
                        self._register(event)
                    elif event.kind == "delta":
                        self._track(event)
                    final = event.kind == "final"
                    self._publish(event, terminal=final)
                    if final and event.error is not None:
                        self.error = event.error
        except asyncio.CancelledError as exc:
            cancelled = exc
        except BaseException as exc:
            self.error = exc
        finally:
            if cancelled is not None and self.run_id:
                await self._publish_stored_end(cancelled)
            elif cancelled is not None:
                self.error = cancelled
            self._end()

    def _register(self, event: TurnEvent) -> None:
        reply = event.message
        assert reply is not None
        self.run_id, self.session_id = reply.id, reply.session_id
        self.reply = reply
        if not event.replay:  # an idempotent replay of a stored turn has its log already
            self.logged = True
            self.runs.register(self)

    async def _publish_stored_end(self, exc: BaseException) -> None:
        """The final event of a run stopped by a cancel: its last reply as stored."""
        try:
            first = await self.runs.reads.message(self.session_id, self.run_id)
            last = await self.runs.reads.last_reply(self.session_id, first) if first else self.reply
        except Exception:
            log.warning("the cancelled run's stored reply could not be read", exc_info=True)
            last = self.reply
        if last is not None:
            self._publish(TurnEvent("final", message=last), terminal=True)
        reason = stop_reason(exc, time.monotonic() + 60)
        if reason.reason != "TURN_CANCELLED":  # CancelTurn's followers just see the stored end
            self.error = reason

    def _end(self) -> None:
        self.done = True
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        if self.logged:
            self.runs.ended(self)

    # --- the follower side ------------------------------------------------------

    async def follow(self, after: int = 0) -> AsyncIterator[Any]:
        """The run's events after sequence ``after``, live until its end; then
        raises the run's error, if any."""
        index = after
        while True:
            while index < len(self.events):
                yield self.events[index]
                index += 1
            if self.done:
                break
            if self._waiter is None:
                self._waiter = asyncio.get_running_loop().create_future()
            await asyncio.shield(self._waiter)  # shared by followers: one leaving must not cancel it
        if self.error is not None:
            raise self.error

    def cancel(self, message: str = TURN_CANCEL) -> None:
        """Stops the run (it stores its reply CANCELLED, ``message`` saying why)."""
        if self.task is not None and not self.task.done():
            self.task.cancel(message)

    async def stopped(self) -> None:
        """Waits for the run's task to end."""
        if self.task is not None:
            await asyncio.gather(asyncio.shield(self.task), return_exceptions=True)


class LiveRuns:
    """The runs of this replica, the event log they write, and the signals
    between replicas (cancel requests, the live tail)."""

    def __init__(
        self,
        event_log: EventLog,
        store: RunEventStore,
        reads: RunReads,
        signals: Any = None,
        poll_s: float = 0.25,
        cancel_poll_s: float = 1.0,
    ) -> None:
        self.log = event_log
        self.store = store
        self.reads = reads
        self.signals = signals  # RedisSignals, or None
        self.poll_s = poll_s
        self.cancel_poll_s = cancel_poll_s
        self.runs: dict[str, RunHandle] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._starts: dict[RunHandle, datetime] = {}  # runs not ended, by when they began

    def live_since(self) -> datetime:
        """When the oldest run still going here began (naive UTC), or now:
        recovery takes older IN_PROGRESS rows of this runner for lost ones."""
        return min(self._starts.values(), default=utcnow())

    def start(self) -> None:
        """Starts the log's flusher and the cancel watchers."""
        self.log.start()
        self._tasks.append(asyncio.create_task(self._poll_cancels(), name="agentapi-cancel-poll"))
        if self.signals is not None:
            self._tasks.append(asyncio.create_task(self.signals.listen_cancels(self._cancel_local)))

    def run(self, tenant_id: str, events: AsyncIterator[TurnEvent], encode: Encoder) -> RunHandle:
        """Starts driving ``events`` (TurnRunner.run's) in a task of its own."""
        handle = RunHandle(self, tenant_id, encode)
        self._starts[handle] = utcnow()
        handle.task = asyncio.create_task(handle.drive(events))
        handle.task.add_done_callback(lambda _: self._starts.pop(handle, None))
        return handle

    def register(self, handle: RunHandle) -> None:
        self.runs[handle.run_id] = handle
        self.log.watch(handle.run_id, handle.checkpoint)

    def ended(self, handle: RunHandle) -> None:
        """Forgets a finished run once its last events are flushed (until then
        a rejoiner here reads them from memory)."""
        self.log.unwatch(handle.run_id)
        loop = asyncio.get_running_loop()
        loop.call_later(self.log.flush_interval_s * 4 + 1, self.runs.pop, handle.run_id, None)

    async def forget(self, message_ids: list[str]) -> None:
        """Drops every trace of the finished runs among ``message_ids`` (an
        erased turn): their handles here, their event logs and checkpoints
        (flushed first, so nothing of them is written after)."""
        for message_id in message_ids:
            handle = self.runs.get(message_id)
            if handle is not None and handle.done:
                del self.runs[message_id]
        await self.log.flush()
        await self.store.forget(message_ids)

    # --- rejoin ----------------------------------------------------------------------

    async def check(self, principal: Principal, session_id: str, message_id: str) -> MessageRow:
        """The turn's first reply, in the caller's tenant. Raises NOT_FOUND
        (SESSION_NOT_FOUND, MESSAGE_NOT_FOUND), INVALID_ARGUMENT."""
        session_id = require_uuid(session_id, "session_id", "INVALID_SESSION_ID")
        message_id = require_uuid(message_id, "message_id", "INVALID_MESSAGE_ID")
        row = await self.reads.message(session_id, message_id)
        if row is None or row.tenant_id != principal.tenant_id or row.role != "assistant":
            raise not_found("message", message_id)
        return row

    async def message(self, principal: Principal, session_id: str, message_id: str) -> MessageRow:
        """Any message of the session; a reply streaming on this replica shows
        its text so far (elsewhere, its last checkpoint). Raises NOT_FOUND,
        INVALID_ARGUMENT."""
        session_id = require_uuid(session_id, "session_id", "INVALID_SESSION_ID")
        message_id = require_uuid(message_id, "message_id", "INVALID_MESSAGE_ID")
        row = await self.reads.message(session_id, message_id)
        if row is None or row.tenant_id != principal.tenant_id or row.delete_time is not None:
            raise not_found("message", message_id)
        if row.status != "in_progress":
            return row
        for handle in self.runs.values():
            current = handle.reply
            if current is not None and current.id == row.id:  # streaming here: the text so far
                row.content = "".join(handle.text)
                row.reasoning_content = "".join(handle.reasoning) or row.reasoning_content
                return row
        saved = await self.reads.checkpoint(row.id)  # streaming elsewhere: its last checkpoint
        if saved is not None:
            row.content, row.reasoning_content = saved[0], saved[1] or row.reasoning_content
        return row

    async def follow(
        self, principal: Principal, session_id: str, message_id: str, after: int
    ) -> AsyncIterator[tuple[int, Any]]:
        """The turn's events after ``after`` as (sequence number, event): the
        stream messages of a run on this replica; else their serialized bytes
        from the log, then the live tail (Redis, or polling every ``poll_s``),
        to the terminal event; a run whose replica died without one ends with
        a ``final`` :class:`TurnEvent` of its stored reply."""
        first = await self.check(principal, session_id, message_id)
        handle = self.runs.get(first.id)
        if handle is not None:
            sequence = after
            async for event in handle.follow(after):
                sequence += 1
                yield sequence, event
            return
        last, terminal = after, False
        events, terminal = await self.log.read(first.id, first.tenant_id, after)
        if not events and not terminal and after == 0 and not await self.reads.running(session_id, first.id):
            if not await self.store.has_log(first.id, first.tenant_id):
                raise AgentAPIError(
                    "FAILED_PRECONDITION",
                    "EVENT_LOG_EXPIRED",
                    "the turn ended and its event log was purged; read its messages with ListMessages",
                    {"message_id": first.id},
                )
        for sequence, data in events:
            last = sequence
            yield sequence, data
        if terminal:
            return
        async for item in self._tail(first, last):
            yield item

    async def _tail(self, first: MessageRow, last: int) -> AsyncIterator[tuple[int, Any]]:
        over_since: float | None = None
        redis_tail = self.signals.follow(first.id, int(self.poll_s * 4000)) if self.signals is not None else None
        try:
            while True:
                if redis_tail is not None:
                    try:
                        chunk = await anext(redis_tail)
                    except Exception:
                        log.warning("Redis tail lost; polling the event log", exc_info=True)
                        redis_tail = None
                        continue
                    if chunk is not None:
                        for offset, data in enumerate(unframe(chunk.payload)):
                            if chunk.first_sequence + offset > last:
                                last = chunk.first_sequence + offset
                                yield last, data
                        if chunk.terminal:
                            return
                        continue
                else:
                    await asyncio.sleep(self.poll_s)
                events, terminal = await self.log.read(first.id, first.tenant_id, last)
                for sequence, data in events:
                    last = sequence
                    yield sequence, data
                if terminal:
                    return
                if await self.reads.running(first.session_id, first.id):
                    over_since = None
                    continue
                # The run let go of its session: its terminal chunk is at most a
                # flush away, unless its replica died (recovery ended it).
                over_since = over_since or time.monotonic()
                if time.monotonic() - over_since > self.log.flush_interval_s * 4 + 1:
                    stored = await self.reads.last_reply(first.session_id, first)
                    yield last + 1, TurnEvent("final", message=stored)
                    return
        finally:
            if redis_tail is not None:
                await redis_tail.aclose()  # type: ignore[attr-defined]

    # --- cancel ------------------------------------------------------------------------

    async def cancel(self, principal: Principal, session_id: str, message_id: str) -> MessageRow:
        """Cancels the turn wherever it runs; returns its last stored reply
        (still IN_PROGRESS when another replica has yet to act)."""
        first = await self.check(principal, session_id, message_id)
        handle = self.runs.get(first.id)
        if handle is not None and not handle.done:
            handle.cancel()
            await handle.stopped()
        elif await self.reads.running(first.session_id, first.id):
            await self.store.request_cancel(first.id, first.tenant_id, utcnow())
            if self.signals is not None:
                try:
                    await self.signals.request_cancel(first.id)
                except Exception:  # the database request stands; it is polled
                    log.warning("could not publish the cancel request to Redis", exc_info=True)
            await asyncio.sleep(0)
        return await self.reads.last_reply(first.session_id, first)

    def _cancel_local(self, run_id: str) -> None:
        handle = self.runs.get(run_id)
        if handle is not None and not handle.done:
            handle.cancel()

    async def _poll_cancels(self) -> None:
        while True:
            await asyncio.sleep(self.cancel_poll_s)
            running = [run_id for run_id, h in self.runs.items() if not h.done]
            if not running:
                continue
            try:
                for run_id in await self.store.cancelled(running):
                    self._cancel_local(run_id)
            except Exception:
                log.warning("could not read cancel requests", exc_info=True)

    # --- shutdown -------------------------------------------------------------------

    async def shutdown(self, grace_s: float) -> None:
        """Gives the runs ``grace_s`` to end, cancels the rest (stored CANCELLED,
        SHUTTING_DOWN), flushes the log and stops the watchers."""
        tasks = [h.task for h in list(self.runs.values()) if h.task is not None and not h.task.done()]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=grace_s)
            for task in pending:
                task.cancel(SHUTDOWN_CANCEL)
            if pending:
                log.warning("shutdown: cancelled %d runs still going after %.1f s", len(pending), grace_s)
                await asyncio.gather(*pending, return_exceptions=True)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.log.close()
        if self.signals is not None:
            await self.signals.aclose()
