"""Printing for people (rich tables, colour only on a terminal) and programs (``--json``),
and exit codes by error class."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import typer
from google.protobuf import json_format
from google.protobuf.message import Message as ProtoMessage
from rich.console import Console
from rich.table import Table

import agentapi

# Exit codes by error class (README, "Command line"); 2 is a usage error (click's own).
EXIT_CODES: list[tuple[type[agentapi.AgentAPIError], int]] = [
    (agentapi.AuthenticationError, 3),
    (agentapi.PermissionDeniedError, 3),
    (agentapi.NotFoundError, 4),
    (agentapi.InvalidArgumentError, 5),
    (agentapi.ConflictError, 5),
    (agentapi.FailedPreconditionError, 5),
    (agentapi.RateLimitedError, 6),
    (agentapi.BudgetExceededError, 6),
    (agentapi.UnavailableError, 7),
    (agentapi.DeadlineExceededError, 7),
    (agentapi.UpstreamError, 7),
]
DEFAULT_API_KEY_HINT = "set AGENTAPI_API_KEY or pass --api-key"

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)

T = TypeVar("T")


def exit_code(error: agentapi.AgentAPIError) -> int:
    """The exit code of a failed call: the first class that matches, else 1."""
    return next((code for cls, code in EXIT_CODES if isinstance(error, cls)), 1)


@contextmanager
def failures() -> Iterator[None]:
    """Turns a typed error into one line on stderr and its exit code."""
    try:
        yield
    except agentapi.AgentAPIError as exc:
        err.print(f"agentapi: {exc}", markup=False, style="red")
        for field, description in exc.field_violations:
            err.print(f"  {field}: {description}", markup=False)
        if isinstance(exc, agentapi.AuthenticationError) and not os.environ.get("AGENTAPI_API_KEY"):
            err.print(f"  ({DEFAULT_API_KEY_HINT})", markup=False)
        raise typer.Exit(exit_code(exc)) from None


def to_dict(message: ProtoMessage) -> dict[str, Any]:
    """A message as JSON-ready data, with the proto field names."""
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def print_json(data: Any) -> None:
    """JSON on stdout, one document, no colour."""
    if isinstance(data, ProtoMessage):
        data = to_dict(data)
    elif isinstance(data, list):
        data = [to_dict(item) if isinstance(item, ProtoMessage) else item for item in data]
    print(json.dumps(data, indent=2, ensure_ascii=False))


def table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """A table for people on stdout."""
    grid = Table(title=title, title_justify="left", show_lines=False)
    for index, column in enumerate(columns):  # the first column names the row: never folded
        grid.add_column(column, no_wrap=index == 0, overflow="ellipsis" if index == 0 else "fold")
    for row in rows:
        grid.add_row(*("" if cell is None else str(cell) for cell in row))
    out.print(grid)


def show(message: ProtoMessage, as_json: bool, title: str = "") -> None:
    """One resource: JSON, or a two-column table of its set fields."""
    if as_json:
        print_json(message)
        return
    data = to_dict(message)
    rows = [(name, value if isinstance(value, str) else json.dumps(value)) for name, value in data.items()]
    table(title, ("field", "value"), rows)


def listing(
    items: Sequence[T], as_json: bool, title: str, columns: Sequence[str], row: Callable[[T], Sequence[Any]]
) -> None:
    """Several resources: a JSON array, or a table."""
    if as_json:
        print_json(list(items))
    else:
        table(title, columns, [row(item) for item in items])


def timestamp(message: Any) -> str:
    """A Timestamp as ``YYYY-MM-DD HH:MM:SS`` UTC, or empty when unset."""
    if not message.seconds and not message.nanos:
        return ""
    return str(message.ToDatetime().strftime("%Y-%m-%d %H:%M:%S"))


def excerpt(text: str, width: int = 60) -> str:
    """The first line of ``text``, cut to ``width`` characters."""
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= width else line[: width - 1] + "…"
