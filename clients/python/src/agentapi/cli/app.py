"""The typer application: global options, the client's command groups, and a
placeholder per registered command (so ``agentapi --help`` lists them)."""

from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass
from typing import Annotated

import typer

import agentapi

HELP = "agentapi: a control plane for AI agents. Client commands talk to a server at AGENTAPI_URL."


@dataclass
class Settings:
    """What every client command connects with."""

    url: str | None
    api_key: str | None
    timeout: float | None

    def client(self) -> agentapi.Client:
        return agentapi.Client(self.url, api_key=self.api_key, timeout=self.timeout)


def settings(ctx: typer.Context) -> Settings:
    """The global options, from the root command's context."""
    root = ctx.find_root()
    assert isinstance(root.obj, Settings)
    return root.obj


def _root(
    ctx: typer.Context,
    url: Annotated[
        str | None, typer.Option(envvar="AGENTAPI_URL", help="gRPC server, host:port (default 127.0.0.1:50051)")
    ] = None,
    api_key: Annotated[
        str | None, typer.Option(envvar="AGENTAPI_API_KEY", help="API key", show_envvar=True, show_default=False)
    ] = None,
    timeout: Annotated[float, typer.Option(help="seconds per call (a whole turn, streamed)")] = 600.0,
) -> None:
    ctx.obj = Settings(url, api_key, timeout)


def build_app(plugins: dict[str, importlib.metadata.EntryPoint]) -> typer.Typer:
    """The application; ``plugins`` become help-only placeholders (``main`` dispatches them)."""
    from agentapi.cli import chat, resources, sessions

    app = typer.Typer(help=HELP, no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
    app.callback()(_root)
    app.command("chat")(chat.chat)
    app.add_typer(resources.agents, name="agents")
    app.add_typer(sessions.sessions, name="sessions")
    app.add_typer(resources.keys, name="keys")
    app.command("usage")(resources.usage)
    app.command("models")(resources.models)
    for name, entry in sorted(plugins.items()):
        app.command(
            name,
            help=f"(from {entry.dist.name if entry.dist else entry.module}; run `agentapi {name} --help`)",
            add_help_option=False,
            context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
        )(_placeholder)
    return app


def _placeholder() -> None:  # never runs: agentapi.cli.main dispatches registered commands first
    raise typer.Exit(1)
