"""``agentapi sessions list|show|export``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from agentapi import v1 as pb
from agentapi.cli.app import settings
from agentapi.cli.output import err, excerpt, failures, listing, print_json, show, timestamp, to_dict
from agentapi.cli.resources import JsonOpt

sessions = typer.Typer(help="Sessions: list, show, export.", no_args_is_help=True)

ROLES = {pb.ROLE_USER: "user", pb.ROLE_ASSISTANT: "assistant", pb.ROLE_TOOL: "tool", pb.ROLE_SYSTEM: "system",
         pb.ROLE_DEVELOPER: "developer"}  # fmt: skip
STATUSES = {v: k.removeprefix("MESSAGE_STATUS_").lower() for k, v in pb.MessageStatus.items()}


@sessions.command("list")
def sessions_list(
    ctx: typer.Context,
    conversation: Annotated[str, typer.Option(help="only this conversation's sessions")] = "",
    limit: Annotated[int, typer.Option(help="at most this many sessions")] = 50,
    as_json: JsonOpt = False,
) -> None:
    """Sessions, newest conversations first (those of one conversation with --conversation)."""
    found: list[pb.Session] = []
    with failures(), settings(ctx).client() as client:
        conversations = [conversation] if conversation else (c.id for c in client.conversations.list())
        for conversation_id in conversations:
            for session in client.sessions.list(conversation_id):
                found.append(session)
                if len(found) >= limit:
                    break
            if len(found) >= limit:
                break
    listing(
        found,
        as_json,
        "sessions",
        ("id", "agent", "model", "created (UTC)", "conversation"),
        lambda s: [s.id, s.agent_id, s.effective_settings.model, timestamp(s.create_time), s.conversation_id],
    )


@sessions.command("show")
def sessions_show(ctx: typer.Context, session_id: str, as_json: JsonOpt = False) -> None:
    """A session and its messages."""
    with failures(), settings(ctx).client() as client:
        session = client.sessions.get(session_id)
        messages = list(client.messages.list(session_id))
    if as_json:
        print_json({"session": to_dict(session), "messages": [to_dict(m) for m in messages]})
        return
    show(session, False, f"session {session_id}")
    listing(
        messages,
        False,
        "messages",
        ("role", "status", "content", "tool calls"),
        lambda m: [ROLES.get(m.role, "?"), STATUSES.get(m.status, "?"), excerpt(m.content, 80),
                   ", ".join(c.function.name for c in m.tool_calls)],
    )  # fmt: skip


@sessions.command("export")
def sessions_export(
    ctx: typer.Context,
    session_id: str,
    format: Annotated[str, typer.Option("--format", help="md, jsonl or openai (OpenAI messages JSON)")] = "md",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="write here instead of stdout")] = None,
) -> None:
    """A session's transcript."""
    if format not in ("md", "jsonl", "openai"):
        raise typer.BadParameter("must be md, jsonl or openai", param_hint="--format")
    with failures(), settings(ctx).client() as client, err.status(f"exporting {session_id}…"):
        exported = client.sessions.export(session_id, format=format)
    if output is None:
        sys.stdout.write(exported.content if exported.content.endswith("\n") else exported.content + "\n")
    else:
        output.write_text(exported.content)
        err.print(f"wrote {output} ({exported.content_type}, {len(exported.content):,} characters)", markup=False)
