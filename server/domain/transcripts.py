"""Transcripts: exporting a session, and replaying its user turns on another model."""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from typing import Any

from server.domain.common import Principal
from server.domain.errors import AgentAPIError, FieldViolation, Violations, invalid_argument
from server.domain.runs import InputMessage, TurnOptions, TurnRunner, in_prompt, to_openai
from server.domain.sessions import SessionService, SessionView
from server.domain.tool_outputs import UNFINISHED
from server.store.db import Database
from server.store.models import MessageRow
from server.store.repositories import MessageRepository

CONTENT_TYPES = {"openai_json": "application/json", "jsonl": "application/jsonl", "markdown": "text/markdown"}


def prompt_messages(view: SessionView, history: list[MessageRow]) -> list[dict[str, Any]]:
    """The session as OpenAI ``messages``, exactly as a next turn's prompt
    would hold it (before windowing): the system prompt, then every message
    but replies that failed or never finished."""
    messages = [to_openai(m) for m in history if in_prompt(m)]
    system_prompt = view.effective.system_prompt
    return ([{"role": "system", "content": system_prompt}] if system_prompt else []) + messages


def _ledger(row: MessageRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "sequence": row.sequence,
        "role": row.role,
        "status": row.status,
        "model": row.model,
        "usage": {
            "prompt_tokens": row.prompt_tokens,
            "completion_tokens": row.completion_tokens,
            "total_tokens": row.prompt_tokens + row.completion_tokens,
        },
        "cost_usd": float(row.cost_usd),
        "create_time": row.create_time.isoformat() + "Z",
        **({"error": row.error} if row.error else {}),
    }


def _header(view: SessionView) -> dict[str, Any]:
    row = view.row
    return {
        "session": {
            "id": row.id,
            "conversation_id": row.conversation_id,
            "status": row.status,
            "effective_settings": view.effective.to_json(),
            **(
                {"parent_session_id": row.parent_session_id, "parent_message_id": row.parent_message_id}
                if getattr(row, "parent_session_id", None)
                else {}
            ),
        },
        "agent_revision": (
            {"agent_id": row.agent_id, "revision": row.agent_revision, "settings": asdict(view.agent)}
            if view.agent is not None
            else None
        ),
    }


def _turns(history: list[MessageRow]) -> list[list[MessageRow]]:
    """Splits the history at each user message: a turn is a user message and what followed it."""
    turns: list[list[MessageRow]] = []
    for message in history:
        if message.role == "user" or not turns:
            turns.append([])
        turns[-1].append(message)
    return turns


def export_openai_json(view: SessionView, history: list[MessageRow]) -> str:
    """One JSON object: ``messages`` (ready to send again), ``session``,
    ``agent_revision`` and ``ledger`` (each message's model, usage, status)."""
    body = {
        **_header(view),
        "model": view.effective.model,
        "messages": prompt_messages(view, history),
        "ledger": [_ledger(m) for m in history],
    }
    return json.dumps(body, indent=2, ensure_ascii=False)


def export_jsonl(view: SessionView, history: list[MessageRow]) -> str:
    """One line per turn: ``messages`` up to and including the turn's reply,
    the model that answered and the turn's summed usage."""
    lines = []
    seen: list[MessageRow] = []
    header = _header(view)
    for number, turn in enumerate(_turns(history), start=1):
        seen += turn
        replies = [m for m in turn if m.role == "assistant"]
        usage = {
            "prompt_tokens": sum(m.prompt_tokens for m in replies),
            "completion_tokens": sum(m.completion_tokens for m in replies),
        }
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        line = {
            "turn": number,
            "session_id": view.row.id,
            "agent_revision": header["agent_revision"] and header["agent_revision"]["revision"],
            "model": replies[-1].model if replies else "",
            "status": replies[-1].status if replies else "",
            "usage": usage,
            "messages": prompt_messages(view, seen),
        }
        lines.append(json.dumps(line, ensure_ascii=False))
    return "\n".join(lines) + ("\n" if lines else "")


def export_markdown(view: SessionView, history: list[MessageRow]) -> str:
    """A transcript for people: settings, then each message with its model and usage."""
    settings = view.effective
    out = [f"# Session {view.row.id}", ""]
    if view.agent is not None:
        out.append(f"- Agent: `{view.agent.key}` (revision {view.row.agent_revision})")
    out += [f"- Model: `{settings.model}`", f"- Conversation: `{view.row.conversation_id}`"]
    if getattr(view.row, "parent_session_id", None):
        out.append(f"- Forked from session `{view.row.parent_session_id}` at message `{view.row.parent_message_id}`")
    out.append("")
    if settings.system_prompt:
        out += ["## System prompt", "", settings.system_prompt, ""]
    for message in history:
        title = f"## {message.sequence}. {message.role}"
        if message.role == "assistant":
            total = message.prompt_tokens + message.completion_tokens
            title += f" · `{message.model}` · {message.status} · {total} tokens"
        if message.tool_call_id:
            title += f" · answers `{message.tool_call_id}`"
        out += [title, ""]
        if message.content:
            out += [message.content, ""]
        for call in message.tool_calls or ():
            function = call.get("function") or {}
            out += [f"Tool call `{call.get('id', '')}`: `{function.get('name', '')}`", "", "```json"]
            out += [function.get("arguments", ""), "```", ""]
        if message.error:
            out += [f"> Error {message.error.get('reason', '')}: {message.error.get('message', '')}", ""]
    return "\n".join(out)


EXPORTERS = {"openai_json": export_openai_json, "jsonl": export_jsonl, "markdown": export_markdown}


class TranscriptService:
    """Exports and replays sessions."""

    def __init__(self, db: Database, sessions: SessionService, turns: TurnRunner) -> None:
        self.db = db
        self.sessions = sessions
        self.turns = turns

    async def export(self, principal: Principal, session_id: str, format_name: str) -> tuple[str, str]:
        """(content type, transcript) in ``openai_json``, ``jsonl`` or
        ``markdown``. Raises INVALID_ARGUMENT (INVALID_SESSION_ID) or NOT_FOUND
        (SESSION_NOT_FOUND)."""
        async with self.db.session() as db:
            view = await SessionService.load(db, principal, session_id)
            history = await MessageRepository(db, view.row.id).history()
        history = [m for m in history if m.delete_time is None]  # DeleteMessage hides them here too
        return CONTENT_TYPES[format_name], EXPORTERS[format_name](view, history)

    async def replay(
        self, principal: Principal, session_id: str, model: str, deadline_s: float | None = None
    ) -> tuple[SessionView, list[MessageRow]]:
        """Re-runs the session's user turns on ``model`` in a new session of the
        same conversation, pinned to the same agent revision. The new model's
        tool calls get the stored output of an identical call (same function
        and arguments); the replay stops at a call that has none, or at a
        failed turn. Raises INVALID_ARGUMENT (FIELD_VIOLATION for an empty
        model), NOT_FOUND (SESSION_NOT_FOUND), FAILED_PRECONDITION
        (CONVERSATION_DELETED)."""
        if not model:
            violations = Violations()
            violations.add("model", "name the model to replay on")
            violations.raise_if_any()
        async with self.db.session() as db:
            source = await SessionService.load(db, principal, session_id)
            history = await MessageRepository(db, source.row.id).history()
        history = [m for m in history if m.delete_time is None]  # a deleted message is not replayed
        overrides = replace(source.overrides, model=model, fallback_models=[])
        target = await self.sessions.create(
            principal,
            source.row.agent_id or "",
            source.row.conversation_id,
            overrides,
            {"replay_of": source.row.id},
            pin_revision=source.row.agent_revision,
        )
        outputs = _stored_outputs(history)
        for turn in _turns(history):
            inputs = [
                InputMessage(role=m.role, content=m.content, name=m.name)
                for m in turn
                if m.role in ("user", "system") and m.status not in UNFINISHED
            ]
            while inputs:
                final = None
                async for event in self.turns.run(principal, target.row.id, inputs, TurnOptions(), deadline_s):
                    if event.kind == "final":
                        final = event.message
                if final is None or final.status != "requires_action":
                    break
                inputs = _answers(final, outputs)
                if inputs is None:
                    return await self._finish(principal, target.row.id)
            if final is None or final.status in UNFINISHED:
                break
        return await self._finish(principal, target.row.id)

    async def _finish(self, principal: Principal, session_id: str) -> tuple[SessionView, list[MessageRow]]:
        async with self.db.session() as db:
            view = await SessionService.load(db, principal, session_id)
            return view, await MessageRepository(db, session_id).history()


def _call_key(call: dict[str, Any]) -> str:
    function = call.get("function") or {}
    arguments = function.get("arguments", "")
    try:
        arguments = json.dumps(json.loads(arguments), sort_keys=True)
    except ValueError:
        pass
    return f"{function.get('name', '')}\n{arguments}"


def _stored_outputs(history: list[MessageRow]) -> dict[str, str]:
    """Each stored tool call's output, keyed by its function and normalized arguments."""
    results = {m.tool_call_id: m.content for m in history if m.role == "tool"}
    outputs = {}
    for message in history:
        for call in message.tool_calls or ():
            if call.get("id") in results:
                outputs[_call_key(call)] = results[call["id"]]
    return outputs


def _answers(reply: MessageRow, outputs: dict[str, str]) -> list[InputMessage] | None:
    """Tool messages answering every call of ``reply`` from ``outputs``; None if one has no stored output."""
    answers = []
    for call in reply.tool_calls or ():
        output = outputs.get(_call_key(call))
        if output is None:
            return None
        answers.append(InputMessage(role="tool", content=output, tool_call_id=str(call.get("id", ""))))
    return answers


def unknown_format(value: int) -> AgentAPIError:
    """INVALID_ARGUMENT (FIELD_VIOLATION) for an export format this server does not know."""
    return invalid_argument(f"unknown export format {value}", [FieldViolation("format", "unknown export format")])
