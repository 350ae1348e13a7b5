"""The part of a session's stored history that a turn reads.

A session's ledger may grow without bound; a turn reads it newest first, in
growing batches, and stops as soon as what it has read decides everything the
turn needs:

* the window (:func:`server.domain.history.window`): the prompt takes the
  newest whole groups within a token budget, so reading stops once the usable
  messages read hold more tokens than ``token_bound`` (an upper bound on the
  budget: the session's ``history_token_budget``, else the model's context
  window) and the oldest usable message read starts a group (it is not a tool
  result, whose call would be older still);
* the hard cap: at most ``AGENTAPI_MAX_HISTORY_MESSAGES`` stored messages are
  carried (whole groups, newest first), whatever the token budget;
* reconciliation (:mod:`server.domain.tool_outputs`): everything from the
  newest user message or finished assistant message with tool calls onwards
  (the pending call group, its stored outputs and the reply after them);
* the busy check and the next sequence number: the newest message (a reply in
  progress is always the newest: nothing can be stored after it while it runs).

The result is the same as windowing the whole history, except that no more
than the cap is carried.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy.ext.asyncio import AsyncSession

from server.domain import limits
from server.domain.catalog import Catalog
from server.domain.history import groups
from server.domain.runs.messages import in_prompt
from server.domain.sessions import SessionView, Settings
from server.domain.tool_outputs import UNFINISHED
from server.store.repositories import MessageRepository

if TYPE_CHECKING:  # runs imports this module: no import cycle at run time
    from server.domain.runs.options import TurnOptions

FIRST_BATCH = 64
MAX_BATCH = 1024


async def read(db: AsyncSession, view: SessionView, catalog: Catalog, options: TurnOptions | None = None) -> list[Any]:
    """The stored messages a turn of ``view``'s session needs, oldest first
    (read-only rows, as :meth:`MessageRepository.history` returns).

    ``options`` are the turn's options: a model named there is windowed by its
    own context window."""
    settings = view.effective
    model = (options.model if options is not None else "") or settings.model
    bound = await token_bound(settings, model, catalog)
    return await newest_needed(MessageRepository(db, view.row.id), bound, limits.active().history_messages)


async def token_bound(settings: Settings, model: str, catalog: Catalog) -> int | None:
    """An upper bound on the turn's history budget in tokens, or None when
    there is none (an unknown model: then only the message cap applies)."""
    if settings.history_token_budget is not None:
        return settings.history_token_budget
    info = await catalog.find(model)
    return info.context_window if info is not None and info.context_window else None


async def newest_needed(repository: MessageRepository, bound: int | None, max_messages: int) -> list[Any]:
    """Reads newest first until the module's conditions hold; oldest first."""
    rows: list[Any] = []  # newest first
    batch = FIRST_BATCH
    while True:
        page = await repository.newest(rows[-1].sequence if rows else None, batch)
        rows.extend(page)
        if len(page) < batch or _enough(rows, bound, max_messages):
            break
        # Doubling, but not far past the cap: what the cap would trim is not read.
        usable = sum(1 for row in rows if in_prompt(row))
        batch = min(batch * 2, MAX_BATCH, max(FIRST_BATCH, max_messages + 1 - usable))
    rows.reverse()
    return _cap(rows, max_messages)


def _anchor(newest_first: list[Any]) -> int | None:
    """Index (newest first) of the message reconciliation looks back to, or None if not read yet."""
    for index, row in enumerate(newest_first):
        if row.role == "user" or (row.role == "assistant" and row.tool_calls and row.status not in UNFINISHED):
            return index
    return None


def _enough(newest_first: list[Any], bound: int | None, max_messages: int) -> bool:
    if _anchor(newest_first) is None:
        return False
    usable = [row for row in newest_first if in_prompt(row)]
    if not usable or usable[-1].role == "tool":  # the oldest read must start a group
        return False
    return len(usable) > max_messages or (bound is not None and sum(r.token_count for r in usable) > bound)


def _cap(rows: list[Any], max_messages: int) -> list[Any]:
    """``rows`` (oldest first) without the oldest whole groups beyond
    ``max_messages`` usable messages; never drops the newest message nor what
    reconciliation needs."""
    usable = [row for row in rows if in_prompt(row)]
    if len(usable) <= max_messages:
        return rows
    kept = 0
    start = len(usable)
    for first, end in reversed(groups(usable)):
        if kept + end - first > max_messages:
            break
        kept += end - first
        start = first
    keep_from = usable[start].sequence if start < len(usable) else rows[-1].sequence
    anchor = _anchor(rows[::-1])
    if anchor is not None:
        keep_from = min(keep_from, rows[len(rows) - 1 - anchor].sequence)
    return [row for row in rows if row.sequence >= keep_from]
