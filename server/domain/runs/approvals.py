"""Approvals: a person's decisions on server tool calls that wait for one.

A call awaiting approval is marked so on its stored assistant message, and
stays pending until a tool message answers it, so the wait survives a
restart. ``SubmitToolOutputs`` brings decisions by ``tool_call_id``: an
approved call runs on the server before the next model step; a denied one
reaches the model as ``denied by the user: <reason>``. Like tool outputs, a
decision already carried out is a no-op, so a retry is safe.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from server.domain.common import utcnow
from server.domain.errors import AgentAPIError, Violations
from server.domain.runs.messages import new_message
from server.domain.tool_outputs import UNFINISHED, off_path
from server.store.models import MessageRow

DENIED = "TOOL_CALL_DENIED"


@dataclass(frozen=True)
class Approval:
    """A decision: run the call (``approve``) or not, and why."""

    tool_call_id: str
    approve: bool
    reason: str = ""


@dataclass
class Decisions:
    """What a turn's approvals do: ``approved`` calls to run, ``denied``
    (call, reason) to answer as denied, ``repeated`` stored tool messages of
    decisions already carried out, and ``decided`` the ids they answer."""

    approved: list[dict[str, Any]] = field(default_factory=list)
    denied: list[tuple[dict[str, Any], str]] = field(default_factory=list)
    repeated: list[Any] = field(default_factory=list)

    @property
    def decided(self) -> set[str]:
        """Every call id the approvals answer."""
        ids = {str(c.get("id", "")) for c in self.approved}
        ids.update(str(c.get("id", "")) for c, _ in self.denied)
        ids.update(m.tool_call_id for m in self.repeated)
        return ids


def _awaiting(history: Sequence[Any]) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """The newest call group's calls awaiting approval by id, and its stored tool messages by call id."""
    for index in range(len(history) - 1, -1, -1):
        message = history[index]
        if off_path(message):
            continue
        if message.role == "user":
            break
        if message.role == "assistant" and message.tool_calls and message.status not in UNFINISHED:
            calls = {str(c.get("id", "")): c for c in message.tool_calls if c.get("awaiting_approval")}
            answered = {m.tool_call_id: m for m in history[index + 1 :] if m.role == "tool" and not off_path(m)}
            return calls, answered
    return {}, {}


def decide(history: Sequence[Any], approvals: Sequence[Approval], path: str = "approvals") -> Decisions:
    """Matches ``approvals`` to the calls awaiting one. Raises INVALID_ARGUMENT
    (UNKNOWN_TOOL_CALL_ID) for an id that awaits no approval, and
    FAILED_PRECONDITION (APPROVAL_CONFLICT) for a decision that contradicts
    one already carried out."""
    awaiting, answered = _awaiting(history)
    result = Decisions()
    violations = Violations()
    seen: set[str] = set()
    for index, approval in enumerate(approvals):
        call = awaiting.get(approval.tool_call_id)
        if call is None or approval.tool_call_id in seen:
            violations.add(
                f"{path}[{index}].tool_call_id", f"no call awaits approval with id {approval.tool_call_id!r}"
            )
            continue
        seen.add(approval.tool_call_id)
        stored = answered.get(approval.tool_call_id)
        if stored is not None:
            was_denied = (stored.error or {}).get("reason") == DENIED
            if was_denied == approval.approve:
                raise AgentAPIError(
                    "FAILED_PRECONDITION",
                    "APPROVAL_CONFLICT",
                    f"tool call {approval.tool_call_id!r} was already {'denied' if was_denied else 'approved'}",
                    {"tool_call_id": approval.tool_call_id},
                )
            result.repeated.append(stored)
        elif approval.approve:
            result.approved.append(call)
        else:
            result.denied.append((call, approval.reason))
    violations.raise_if_any("the approvals do not match the calls awaiting one", reason="UNKNOWN_TOOL_CALL_ID")
    return result


def decision_rows(
    decisions: Decisions, session_id: str, tenant_id: str, first_sequence: int, runner_id: str
) -> tuple[list[MessageRow], list[MessageRow]]:
    """Tool messages for the decisions, numbered from ``first_sequence``:
    (IN_PROGRESS rows of approved calls, which then run; finished rows of
    denied calls)."""
    now = utcnow()
    sequence = first_sequence
    approved, denied = [], []
    for call in decisions.approved:
        approved.append(_row(call, session_id, tenant_id, sequence, now, runner_id, "in_progress", ""))
        sequence += 1
    for call, reason in decisions.denied:
        text = f"denied by the user: {reason or 'no reason given'}"
        row = _row(call, session_id, tenant_id, sequence, now, runner_id, "failed", text)
        row.error = {"code": "FAILED_PRECONDITION", "reason": DENIED, "message": text}
        denied.append(row)
        sequence += 1
    return approved, denied


def _row(
    call: dict[str, Any],
    session_id: str,
    tenant_id: str,
    sequence: int,
    now: Any,
    runner_id: str,
    status: str,
    text: str,
) -> MessageRow:
    return new_message(
        session_id,
        tenant_id,
        sequence,
        "tool",
        now,
        content=text,
        tool_call_id=str(call.get("id", "")),
        name=str((call.get("function") or {}).get("name", "")),
        status=status,
        executor=str(call.get("executor", "")),
        runner_id=runner_id if status == "in_progress" else "",
    )
