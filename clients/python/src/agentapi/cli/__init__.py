"""The ``agentapi`` command: the client's commands (chat, agents, sessions, usage,
keys, models), plus the commands other installed packages register in the
``agentapi.commands`` entry-point group (the server registers serve, migrate and
purge). One command, no clash: only this package declares the ``agentapi`` script.

typer (on click) for the commands: typed options from signatures, help, and
CliRunner for tests; rich for tables, colour only on a terminal, and prompts.
"""

from __future__ import annotations

import importlib.metadata
import sys
from collections.abc import Callable, Sequence

PLUGIN_GROUP = "agentapi.commands"


def plugins() -> dict[str, importlib.metadata.EntryPoint]:
    """Commands registered by other packages: name -> entry point of a ``main(argv) -> int``
    that receives the whole command line after ``agentapi`` (its own name first)."""
    return {ep.name: ep for ep in importlib.metadata.entry_points(group=PLUGIN_GROUP)}


def version() -> str:
    """The server's version when it is installed (``agentapi``), else the client's."""
    for dist in ("agentapi", "agentapi-client"):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return "unknown"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``agentapi`` console script.

    A registered command (``serve``, ...) gets the command line untouched, before
    typer parses anything, so its flags, exit codes and signal handling are its own.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    found = plugins()
    if args and args[0] in found:
        command: Callable[[list[str]], int] = found[args[0]].load()
        return int(command(args) or 0)
    if args[:1] == ["--version"]:
        print(f"agentapi {version()}")
        return 0
    from agentapi.cli.app import build_app

    app = build_app(found)
    try:
        app(args, prog_name="agentapi", standalone_mode=True)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return 0
