"""Running a step's server-side tool calls: exactly once, bounded, stored.

Each call's tool message is stored IN_PROGRESS (with its executor and step)
before the call runs, so a crash leaves a findable row that recovery marks
as interrupted, outcome unknown; nothing runs a call again on its own. Calls
of one step run concurrently, at most ``MAX_CONCURRENT_CALLS`` at a time,
each within its timeout, its output size and the run's deadline. A tool's
failure is its outcome: the model reads it as the tool's output.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

from server.domain.common import utcnow
from server.domain.history import count_message
from server.domain.runs.events import TurnEvent
from server.domain.runs.messages import new_message, to_openai
from server.domain.runs.terminal import insert_messages, store_tool_result
from server.domain.runs.toolset import ServerTool, Toolset
from server.observability import runs as observed
from server.store.db import Database
from server.store.models import MessageRow
from server.tools.base import TOOL_UNAVAILABLE, ToolOutcome
from server.tools.execution import DEFAULT_MAX_OUTPUT_BYTES, DEFAULT_TIMEOUT_S, execute

MAX_CONCURRENT_CALLS = 4


def server_calls(reply: MessageRow, toolset: Toolset) -> list[dict[str, Any]]:
    """The reply's calls the server runs now (not the client's, not those awaiting approval)."""
    return [
        call
        for call in reply.tool_calls or ()
        if call.get("executor", "client") != "client" and not call.get("awaiting_approval")
    ]


def tool_rows(reply: MessageRow, calls: Sequence[dict[str, Any]], step: int, runner_id: str) -> list[MessageRow]:
    """IN_PROGRESS tool messages for ``calls``, numbered after ``reply``."""
    now = utcnow()
    return [
        new_message(
            reply.session_id,
            reply.tenant_id,
            reply.sequence + offset,
            "tool",
            now,
            tool_call_id=str(call.get("id", "")),
            name=str((call.get("function") or {}).get("name", "")),
            status="in_progress",
            executor=call["executor"],
            step=step,
            runner_id=runner_id,
        )
        for offset, call in enumerate(calls, start=1)
    ]


async def run_calls(
    db: Database,
    toolset: Toolset,
    calls: Sequence[dict[str, Any]],
    rows: list[MessageRow],
    deadline: float,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES,
    inserted: bool = False,
) -> AsyncIterator[TurnEvent]:
    """Stores ``rows`` (one per call, IN_PROGRESS; unless ``inserted``), yields
    ``tool_started`` for each, runs the calls and yields ``tool_completed``
    with each stored tool message as it ends. A call whose tool the run no
    longer offers ends TOOL_UNAVAILABLE. When the caller goes away, the
    running calls are cancelled (an MCP call through its SDK) and stored
    CANCELLED."""
    if not inserted:
        await insert_messages(db, rows)
    for call, row in zip(calls, rows, strict=True):
        yield TurnEvent("tool_started", message=row, call=call)
    limit = asyncio.Semaphore(MAX_CONCURRENT_CALLS)

    async def one(call: dict[str, Any], row: MessageRow) -> MessageRow:
        tool: ServerTool | None = toolset.server.get(row.name)
        if tool is None:  # approved earlier, gone from the agent's tools since
            gone = ToolOutcome.failed(TOOL_UNAVAILABLE, f"tool {row.name!r} is no longer offered to this agent")
            return await _store(db, row, gone, time.monotonic())
        async with limit:
            began = time.monotonic()
            bound = max(0.0, min(timeout_s, deadline - began))
            arguments = str((call.get("function") or {}).get("arguments", ""))
            with observed.current().tool_call(row, arguments) as watched:  # its span and metrics
                outcome = watched["outcome"] = await execute(
                    tool.executor, tool.remote_name, arguments, bound, max_output_bytes
                )
            return await _store(db, row, outcome, began)

    tasks = [asyncio.ensure_future(one(call, row)) for call, row in zip(calls, rows, strict=True)]
    try:
        for next_done in asyncio.as_completed(tasks):
            yield TurnEvent("tool_completed", message=await next_done)
    finally:
        unfinished = [(task, row) for task, row in zip(tasks, rows, strict=True) if not task.done()]
        for task, _ in unfinished:
            task.cancel()
        if unfinished:
            await asyncio.gather(*(task for task, _ in unfinished), return_exceptions=True)
            cancelled = ToolOutcome.failed("CANCELLED", "the run was cancelled while the tool ran")
            await asyncio.shield(
                asyncio.gather(*(_store(db, row, cancelled, None, "cancelled") for _, row in unfinished))
            )


async def _store(
    db: Database, row: MessageRow, outcome: ToolOutcome, began: float | None, status: str = ""
) -> MessageRow:
    row.status = status or outcome.status
    row.content = outcome.output
    if outcome.error_reason:
        code = "CANCELLED" if row.status == "cancelled" else "FAILED_PRECONDITION"
        row.error = {"code": code, "reason": outcome.error_reason, "message": outcome.error_message}
    row.duration_ms = int((time.monotonic() - began) * 1000) if began is not None else row.duration_ms
    row.token_count = count_message(to_openai(row), "")
    row.update_time = utcnow()
    await store_tool_result(db, row)
    return row
