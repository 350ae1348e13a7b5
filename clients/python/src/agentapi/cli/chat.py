"""``agentapi chat``: a streamed chat in the terminal, showing tool steps and
answering client tools and approvals at a prompt."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.prompt import Confirm, Prompt

import agentapi
from agentapi import v1 as pb
from agentapi.cli.app import settings
from agentapi.cli.output import err, excerpt, failures, out

EXIT_WORDS = {"/exit", "/quit"}


def render(turn: agentapi.TurnStream) -> pb.Message:
    """Prints a turn as it streams: reasoning dimmed and italic, text as it comes, tool steps
    dimmed; the final message."""
    with turn:
        for event in turn.events:
            kind = event.WhichOneof("event")
            if kind == "delta" and event.delta.reasoning:
                out.print(event.delta.reasoning, end="", style="dim italic", markup=False, soft_wrap=True)
            if kind == "delta" and event.delta.content:
                out.print(event.delta.content, end="", markup=False, soft_wrap=True)
            elif kind == "tool_call_started":
                call = event.tool_call_started
                out.print(f"\n  ⚙ {call.name}({excerpt(call.arguments, 80)})", style="dim", markup=False)
            elif kind == "tool_call_completed":
                out.print(f"  → {excerpt(event.tool_call_completed.content, 80)}", style="dim", markup=False)
        final = turn.final_message()
    out.print()
    return final


def answer(final: pb.Message) -> tuple[dict[str, str], list[pb.ToolApproval]]:
    """Asks the person for each tool call the turn waits on: an approval, or a client tool's output."""
    outputs: dict[str, str] = {}
    approvals: list[pb.ToolApproval] = []
    for call in final.tool_calls:
        name, arguments = call.function.name, call.function.arguments
        if call.awaiting_approval:
            approved = Confirm.ask(f"[yellow]approve[/] {name}({arguments})?", console=out)
            reason = "" if approved else Prompt.ask("reason", default="", console=out)
            approvals.append(pb.ToolApproval(tool_call_id=call.id, approve=approved, reason=reason))
        elif not call.executor or call.executor == "client":
            outputs[call.id] = Prompt.ask(f"[yellow]output of[/] {name}({arguments})", console=out)
    return outputs, approvals


def run_turn(client: agentapi.Client, session_id: str, text: str, options: pb.TurnOptions | None = None) -> pb.Message:
    """One turn, and its continuations while it waits for tool outputs or approvals."""
    final = render(client.sessions.stream(session_id, text, options=options))
    while final.status == pb.MESSAGE_STATUS_REQUIRES_ACTION:
        outputs, approvals = answer(final)
        continued = client.sessions.submit_tool_outputs_stream(
            session_id, outputs, approvals=approvals, options=options
        )
        final = render(continued)
    return final


def chat(
    ctx: typer.Context,
    agent: Annotated[str | None, typer.Option(help="chat with this agent (key or id)")] = None,
    model: Annotated[str | None, typer.Option(help="chat with a plain model, no agent")] = None,
    session: Annotated[str | None, typer.Option(help="continue this session")] = None,
    once: Annotated[str | None, typer.Option(help="send this one message, print the reply, exit")] = None,
    reasoning_effort: Annotated[
        str | None, typer.Option(help="low, medium or high: the model reasons first (shown dimmed)")
    ] = None,
) -> None:
    """Chat with an agent or a model, streaming; /exit (or Ctrl-D) ends."""
    if sum(x is not None for x in (agent, model, session)) != 1:
        raise typer.BadParameter("give exactly one of --agent, --model or --session")
    options = pb.TurnOptions(reasoning_effort=reasoning_effort) if reasoning_effort else None
    with failures(), settings(ctx).client() as client:
        if session is None:
            if agent:
                session = client.sessions.create(agent_id=agent).id
            else:
                session = client.sessions.create(overrides=pb.SessionSettings(model=model or "")).id
        err.print(f"session {session}", style="dim", markup=False)
        if once is not None:
            final = run_turn(client, session, once, options)
            if final.status != pb.MESSAGE_STATUS_COMPLETED:
                raise typer.Exit(1)
            return
        while True:
            try:
                text = Prompt.ask("[bold cyan]you[/]", console=out)
            except EOFError:
                out.print()
                return
            if text.strip() in EXIT_WORDS:
                return
            if not text.strip():
                continue
            try:
                run_turn(client, session, text, options)
            except KeyboardInterrupt:  # the turn's call is cancelled when its stream is left
                err.print("\n(cancelled)", style="dim")
