"""``agentapi agents``, ``keys``, ``usage`` and ``models``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from google.protobuf import json_format

from agentapi import v1 as pb
from agentapi.cli.app import settings
from agentapi.cli.output import err, failures, listing, out, print_json, show, timestamp

JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON for programs instead of a table")]
FileOpt = Annotated[Path, typer.Option("--file", "-f", help="the agent as YAML or JSON", exists=True, dir_okay=False)]

agents = typer.Typer(help="Agents: list, get, create, update, delete, revisions.", no_args_is_help=True)
keys = typer.Typer(help="API keys: create, list, revoke.", no_args_is_help=True)


def load_agent(path: Path) -> tuple[pb.Agent, list[str]]:
    """The agent in a YAML or JSON file (proto field names or their camelCase JSON names),
    and the top-level fields it sets (an update's mask).

    Raises:
        typer.BadParameter: not YAML/JSON, not a mapping, an unknown field or a wrong type.
    """
    try:
        data = yaml.safe_load(path.read_text())  # YAML is a superset of JSON
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise typer.BadParameter(f"{path.name}: not YAML or JSON ({problem})", param_hint="--file") from None
    if not isinstance(data, dict):
        raise typer.BadParameter(f"{path.name}: expected a mapping of agent fields", param_hint="--file")
    try:
        agent = json_format.ParseDict(data, pb.Agent())
    except json_format.ParseError as exc:
        raise typer.BadParameter(f"{path.name}: {exc}", param_hint="--file") from None
    fields = {f.json_name: f.name for f in pb.Agent.DESCRIPTOR.fields} | {
        f.name: f.name for f in pb.Agent.DESCRIPTOR.fields
    }
    return agent, sorted(fields[name] for name in data)


def _agent_row(agent: pb.Agent) -> list[Any]:
    deleted = " (deleted)" if agent.HasField("delete_time") else ""
    return [agent.key + deleted, agent.default_model, agent.revision, timestamp(agent.update_time), agent.id]


@agents.command("list")
def agents_list(
    ctx: typer.Context,
    filter: Annotated[str, typer.Option(help='AIP-160 filter, e.g. default_model = "gpt-4o"')] = "",
    show_deleted: Annotated[bool, typer.Option(help="include soft-deleted agents")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Every agent."""
    with failures(), settings(ctx).client() as client:
        items = list(client.agents.list(filter=filter, show_deleted=show_deleted))
    listing(items, as_json, "agents", ("key", "model", "revision", "updated (UTC)", "id"), _agent_row)


@agents.command("get")
def agents_get(
    ctx: typer.Context, agent: Annotated[str, typer.Argument(help="key or id")], as_json: JsonOpt = False
) -> None:
    """One agent."""
    with failures(), settings(ctx).client() as client:
        show(client.agents.get(agent), as_json, f"agent {agent}")


@agents.command("create")
def agents_create(ctx: typer.Context, file: FileOpt, as_json: JsonOpt = False) -> None:
    """Creates an agent from a file (agent.yaml: key, default_model, system_prompt, tools, ...)."""
    agent, _ = load_agent(file)
    with failures(), settings(ctx).client() as client:
        created = client.agents.create(agent)
    if as_json:
        print_json(created)
    else:
        out.print(f"created agent {created.key} ({created.id}), revision {created.revision}", markup=False)


@agents.command("update")
def agents_update(
    ctx: typer.Context,
    agent: Annotated[str, typer.Argument(help="key or id")],
    file: FileOpt,
    as_json: JsonOpt = False,
) -> None:
    """Sets the fields the file names (the rest stay); a new revision."""
    body, fields = load_agent(file)
    with failures(), settings(ctx).client() as client:
        current = client.agents.get(agent)
        body.ClearField("key")  # the key names the agent; it is not updated
        updated = client.agents.update(current.id, body, update_mask=[f for f in fields if f != "key"])
    if as_json:
        print_json(updated)
    else:
        out.print(f"updated agent {updated.key}, revision {updated.revision}", markup=False)


@agents.command("delete")
def agents_delete(
    ctx: typer.Context, agent: Annotated[str, typer.Argument(help="key or id")], as_json: JsonOpt = False
) -> None:
    """Soft-deletes an agent (restorable until it expires)."""
    with failures(), settings(ctx).client() as client:
        deleted = client.agents.delete(agent)
    if as_json:
        print_json(deleted)
    else:
        out.print(f"deleted agent {deleted.key}", markup=False)


@agents.command("revisions")
def agents_revisions(
    ctx: typer.Context, agent: Annotated[str, typer.Argument(help="key or id")], as_json: JsonOpt = False
) -> None:
    """Every revision of an agent, newest first."""
    with failures(), settings(ctx).client() as client:
        items = list(client.agents.revisions(agent))
    listing(
        items,
        as_json,
        f"revisions of {agent}",
        ("revision", "created (UTC)", "model", "system prompt"),
        lambda r: [r.revision, timestamp(r.create_time), r.agent.default_model, r.agent.system_prompt[:60]],
    )


SCOPES = {"client": pb.API_KEY_SCOPE_CLIENT, "admin": pb.API_KEY_SCOPE_ADMIN}


@keys.command("create")
def keys_create(
    ctx: typer.Context,
    name: Annotated[str, typer.Option(help="display name")] = "",
    scope: Annotated[str, typer.Option(help="client or admin")] = "client",
    tenant: Annotated[str, typer.Option(help="tenant id (master key only; default: the caller's)")] = "",
    as_json: JsonOpt = False,
) -> None:
    """Creates an API key; its secret is printed once."""
    if scope not in SCOPES:
        raise typer.BadParameter("must be client or admin", param_hint="--scope")
    with failures(), settings(ctx).client() as client:
        created = client.api_keys.create(tenant_id=tenant, display_name=name, scope=SCOPES[scope])
    if as_json:
        print_json(created)
        return
    out.print(f"created key {created.api_key.id} ({scope}) for tenant {created.api_key.tenant_id}", markup=False)
    err.print("the secret is shown once; keep it:", style="yellow")
    print(created.secret)


@keys.command("list")
def keys_list(
    ctx: typer.Context,
    tenant: Annotated[str, typer.Option(help="tenant id (default: the caller's)")] = "",
    as_json: JsonOpt = False,
) -> None:
    """Every key of a tenant (never a secret)."""
    with failures(), settings(ctx).client() as client:
        items = list(client.api_keys.list(tenant_id=tenant))
    scope_names = {v: k for k, v in SCOPES.items()}
    listing(
        items,
        as_json,
        "API keys",
        ("id", "name", "scope", "prefix", "created (UTC)", "revoked (UTC)"),
        lambda k: [
            k.id,
            k.display_name,
            scope_names.get(k.scope, "?"),
            k.secret_prefix,
            timestamp(k.create_time),
            timestamp(k.revoke_time),
        ],
    )


@keys.command("revoke")
def keys_revoke(
    ctx: typer.Context, key_id: Annotated[str, typer.Argument(help="the key's id")], as_json: JsonOpt = False
) -> None:
    """Revokes a key: it authenticates nothing from now on."""
    with failures(), settings(ctx).client() as client:
        revoked = client.api_keys.revoke(key_id)
    if as_json:
        print_json(revoked)
    else:
        out.print(f"revoked key {revoked.id}", markup=False)


DIMENSIONS = {"model": pb.USAGE_DIMENSION_MODEL, "agent": pb.USAGE_DIMENSION_AGENT, "day": pb.USAGE_DIMENSION_DAY,
              "session": pb.USAGE_DIMENSION_SESSION, "tenant": pb.USAGE_DIMENSION_TENANT}  # fmt: skip


def period_start(period: str, now: datetime) -> datetime | None:
    """The start (UTC) of the current ``day``, ``week`` (Monday) or ``month``; None for ``all``."""
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    starts = {"day": today, "week": today - timedelta(days=today.weekday()), "month": today.replace(day=1), "all": None}
    if period not in starts:
        raise typer.BadParameter("must be day, week, month or all", param_hint="--period")
    return starts[period]


def usage(
    ctx: typer.Context,
    by: Annotated[str, typer.Option(help="model, agent, day, session or tenant")] = "model",
    period: Annotated[str, typer.Option(help="day, week, month (UTC, so far) or all")] = "month",
    tenant: Annotated[str, typer.Option(help="tenant id (master key only)")] = "",
    as_json: JsonOpt = False,
) -> None:
    """Tokens and cost (USD) of the period so far, grouped."""
    if by not in DIMENSIONS:
        raise typer.BadParameter(f"must be one of {', '.join(DIMENSIONS)}", param_hint="--by")
    start = period_start(period, datetime.now(UTC))
    with failures(), settings(ctx).client() as client:
        report = client.usage.get(group_by=[DIMENSIONS[by]], start_time=start, tenant_id=tenant)
    if as_json:
        print_json(report)
        return
    rows = [[getattr(r, f"{by}_id" if by in ("agent", "session", "tenant") else by) or "-", r.turns, r.prompt_tokens,
             r.completion_tokens, r.total_tokens, f"{r.cost_usd:.4f}"] for r in report.rows]  # fmt: skip
    t = report.total
    rows.append(["total", t.turns, t.prompt_tokens, t.completion_tokens, t.total_tokens, f"{t.cost_usd:.4f}"])
    listing(rows, False, f"usage by {by}, {period}", (by, "turns", "prompt", "completion", "total", "USD"), list)


def models(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """The models the server's upstream serves."""
    with failures(), settings(ctx).client() as client:
        items = client.models.list()
    listing(items, as_json, "models", ("id", "owned by", "context window"),
            lambda m: [m.id, m.owned_by, m.context_window or ""])  # fmt: skip
