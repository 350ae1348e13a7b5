"""Reconciling a turn's tool messages with the tool calls stored in the ledger.

The newest assistant message with tool calls opens a "call group"; tool
messages answer its calls by ``tool_call_id``. The rules, applied to the
inputs of a turn (SendMessage, SendStreamingMessage, SubmitToolOutputs):

* a tool message for an id the group did not call: INVALID_ARGUMENT
  (UNKNOWN_TOOL_CALL_ID);
* a tool message identical to a stored output: a no-op, so a caller may
  retry after a failure or a restart without duplicating it;
* a different output for an answered call: FAILED_PRECONDITION
  (TOOL_OUTPUT_CONFLICT);
* calls still unanswered after the inputs: FAILED_PRECONDITION
  (TOOL_OUTPUTS_PENDING), with the ids in the error's metadata, and also
  when the turn brings a new user message instead;
* when every input was a no-op and the reply that followed those outputs
  is stored and finished, that reply is the answer (nothing is re-run); if
  it failed or was cancelled, the continuation runs again.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from server.domain.errors import AgentAPIError, Violations

# Replies that never finished: kept in the ledger, but not a turn's answer.
UNFINISHED = ("failed", "in_progress", "cancelled")


class Input(Protocol):
    """A caller's message as reconciliation sees it."""

    role: str
    content: str
    tool_call_id: str
    tool_calls: list[dict[str, Any]]


class Stored(Protocol):
    """A stored message as reconciliation sees it."""

    role: str
    content: str
    status: str
    tool_call_id: str
    tool_calls: list[dict[str, Any]] | None


@dataclass
class Reconciled:
    """What a turn must do: store ``new`` (indexes into the inputs) and run,
    or answer with the stored ``reply``; ``repeated`` are the stored tool
    messages that identical inputs matched."""

    new: list[int] = field(default_factory=list)
    repeated: list[Any] = field(default_factory=list)
    reply: Any | None = None


def _call_group(history: Sequence[Stored]) -> tuple[int, list[str]] | None:
    """The index and call ids of the newest assistant message with tool calls
    (ignoring replies that failed or never finished), unless a user message
    came after it, which closes it."""
    for index in range(len(history) - 1, -1, -1):
        message = history[index]
        if off_path(message):
            continue
        if message.role == "user":
            return None
        if message.role == "assistant" and message.tool_calls and message.status not in UNFINISHED:
            return index, [str(call.get("id", "")) for call in message.tool_calls]
    return None


def off_path(message: Any) -> bool:
    """A message a regeneration superseded or a deletion hid: not part of the
    session's active path, so it opens and answers no call group."""
    return bool(getattr(message, "superseded_by", None) or getattr(message, "delete_time", None))


def pending_calls(history: Sequence[Stored]) -> list[str]:
    """Ids of the newest call group's calls that no stored tool message answers."""
    group = _call_group(history)
    if group is None:
        return []
    start, ids = group
    answered = {m.tool_call_id for m in history[start + 1 :] if m.role == "tool" and not off_path(m)}
    return [i for i in ids if i not in answered]


def reconcile(
    history: Sequence[Stored], inputs: Sequence[Input], path: str = "messages", decided: Collection[str] = ()
) -> Reconciled:
    """Applies the module's rules; ``path`` names the inputs in field
    violations; ``decided`` are call ids that approvals answer (not pending)."""
    group = _call_group(history)
    ids: list[str] = group[1] if group else []
    stored = (
        {m.tool_call_id: m for m in history[group[0] + 1 :] if m.role == "tool" and not off_path(m)} if group else {}
    )
    result = Reconciled()
    seen: dict[str, str] = {}
    violations = Violations()
    imported: set[str] = set()  # calls of assistant messages among the inputs (imported history)
    for index, message in enumerate(inputs):
        if message.role != "tool" or message.tool_call_id in imported:
            result.new.append(index)
            imported.update(str(call.get("id", "")) for call in message.tool_calls or ())
            continue
        call_id = message.tool_call_id
        if call_id not in ids:
            violations.add(f"{path}[{index}].tool_call_id", f"no pending tool call has id {call_id!r}")
            continue
        if call_id in seen:
            if seen[call_id] != message.content:
                violations.add(f"{path}[{index}]", f"two different outputs for tool call {call_id!r}")
            continue
        seen[call_id] = message.content
        previous = stored.get(call_id)
        if previous is None:
            result.new.append(index)
        elif previous.content == message.content:
            result.repeated.append(previous)
        else:
            raise AgentAPIError(
                "FAILED_PRECONDITION",
                "TOOL_OUTPUT_CONFLICT",
                f"tool call {call_id!r} already has a different output",
                {"tool_call_id": call_id},
            )
    violations.raise_if_any("the tool outputs do not match the pending tool calls", reason="UNKNOWN_TOOL_CALL_ID")
    still_pending = [i for i in ids if i not in stored and i not in seen and i not in decided]
    if still_pending:
        raise AgentAPIError(
            "FAILED_PRECONDITION",
            "TOOL_OUTPUTS_PENDING",
            f"the assistant is waiting for the outputs of tool calls {', '.join(still_pending)}",
            {"pending_tool_call_ids": ",".join(still_pending)},
        )
    if not result.new and result.repeated and group is not None:
        last_output = max(history.index(m) for m in stored.values())
        after = [m for m in history[last_output + 1 :] if m.role == "assistant" and not off_path(m)]
        if after and after[-1].status not in UNFINISHED:
            result.reply = after[-1]
    return result


def reply_after(history: Sequence[Stored], answers: Sequence[Any]) -> Any | None:
    """The finished assistant reply that followed the stored tool messages
    ``answers`` (a retry that repeats them answers with it), or None."""
    if not answers:
        return None
    last = max(history.index(m) for m in answers if m in history)
    after = [m for m in history[last + 1 :] if m.role == "assistant" and not off_path(m)]
    return after[-1] if after and after[-1].status not in UNFINISHED else None
