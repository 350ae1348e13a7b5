"""Conversions between proto messages and domain values. No rules live here."""

from __future__ import annotations

import math
from datetime import datetime
from decimal import Decimal
from typing import Any

from google.protobuf import json_format, struct_pb2, timestamp_pb2

from agentapi import v1 as pb
from server.domain import agents as agent_rules
from server.domain.agents import AgentFields
from server.domain.conversations import conversation_etag
from server.domain.money import money
from server.domain.sessions import SessionView, Settings
from server.domain.tenants import TenantFields
from server.store.models import AgentRevisionRow, AgentRow, ApiKeyRow, ConversationRow, TenantRow


def timestamp(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    """A naive-UTC datetime as a Timestamp (None stays unset)."""
    if value is None:
        return None
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value)
    return stamp


def struct(value: dict[str, Any] | None) -> struct_pb2.Struct:
    """A JSON object as a Struct."""
    result = struct_pb2.Struct()
    if value:
        result.update(value)
    return result


def from_struct(value: struct_pb2.Struct) -> dict[str, Any]:
    """A Struct as a JSON object."""
    return json_format.MessageToDict(value)


def tool_to_json(tool: pb.Tool) -> dict[str, Any]:
    """A Tool in OpenAI's function-tool JSON shape."""
    function: dict[str, Any] = {"name": tool.function.name}
    if tool.function.description:
        function["description"] = tool.function.description
    if tool.function.HasField("parameters"):
        function["parameters"] = from_struct(tool.function.parameters)
    if tool.function.HasField("strict"):
        function["strict"] = tool.function.strict
    return {"type": tool.type or "function", "function": function}


def tool_from_json(tool: dict[str, Any]) -> pb.Tool:
    """An OpenAI function tool as a Tool."""
    function = tool.get("function") or {}
    definition = pb.FunctionDefinition(name=function.get("name", ""), description=function.get("description", ""))
    if function.get("parameters") is not None:
        definition.parameters.CopyFrom(struct(function["parameters"]))
    if function.get("strict") is not None:
        definition.strict = bool(function["strict"])
    return pb.Tool(type=tool.get("type", "function"), function=definition)


def agent_fields(agent: pb.Agent) -> AgentFields:
    """The writable fields of a proto Agent."""
    return AgentFields(
        key=agent.key,
        display_name=agent.display_name,
        system_prompt=agent.system_prompt,
        default_model=agent.default_model,
        fallback_models=list(agent.fallback_models),
        temperature=agent.temperature if agent.HasField("temperature") else None,
        tools=[tool_to_json(t) for t in agent.tools],
        metadata=from_struct(agent.metadata),
        allowed_tenants=list(agent.allowed_tenants),
        builtin_tools=list(agent.builtin_tools),
        mcp_servers=[agent_mcp_server_to_json(s) for s in agent.mcp_servers],
        max_steps=agent.max_steps if agent.HasField("max_steps") else None,
        routing_mode=ROUTING_MODE_NAMES.get(agent.routing_mode, "unknown") if agent.routing_mode else None,
    )


ROUTING_MODES = {
    "passthrough": pb.ROUTING_MODE_PASSTHROUGH,
    "reasoning": pb.ROUTING_MODE_REASONING,
    "auto": pb.ROUTING_MODE_AUTO,
    "orchestration": pb.ROUTING_MODE_ORCHESTRATION,
}
ROUTING_MODE_NAMES = {value: name for name, value in ROUTING_MODES.items()}
APPROVAL_MODE_FROM_PROTO = {
    pb.APPROVAL_MODE_UNSPECIFIED: "never",
    pb.APPROVAL_MODE_NEVER: "never",
    pb.APPROVAL_MODE_ALWAYS: "always",
    pb.APPROVAL_MODE_PER_TOOL: "per_tool",
}
APPROVAL_MODE_TO_PROTO = {name: value for value, name in APPROVAL_MODE_FROM_PROTO.items() if value}


def agent_mcp_server_to_json(server: pb.AgentMcpServer) -> dict[str, Any]:
    """An agent's MCP server entry as stored; an unknown approval mode fails validation."""
    return {
        "server_id": server.server_id,
        "allowed_tools": list(server.allowed_tools),
        "require_approval": APPROVAL_MODE_FROM_PROTO.get(server.require_approval, ""),
        "approval_required_tools": list(server.approval_required_tools),
    }


def agent_mcp_server(entry: dict[str, Any]) -> pb.AgentMcpServer:
    """A stored MCP server entry as a proto."""
    return pb.AgentMcpServer(
        server_id=entry.get("server_id", ""),
        allowed_tools=entry.get("allowed_tools") or [],
        require_approval=APPROVAL_MODE_TO_PROTO.get(entry.get("require_approval", "never"), 0),
        approval_required_tools=entry.get("approval_required_tools") or [],
    )


def agent(row: AgentRow, catalog: set[str] | None = None) -> pb.Agent:
    """A stored agent as a proto; ``catalog`` (model ids) fills ``unsupported_models``."""
    message = pb.Agent(
        id=row.id,
        key=row.key,
        display_name=row.display_name,
        system_prompt=row.system_prompt,
        default_model=row.default_model,
        fallback_models=row.fallback_models,
        tools=[tool_from_json(t) for t in row.tools],
        metadata=struct(row.metadata_),
        create_time=timestamp(row.create_time),
        update_time=timestamp(row.update_time),
        delete_time=timestamp(row.delete_time),
        expire_time=timestamp(row.expire_time),
        etag=agent_rules.etag(row),
        revision=row.revision,
        allowed_tenants=row.allowed_tenants or [],
        builtin_tools=row.builtin_tools or [],
        mcp_servers=[agent_mcp_server(entry) for entry in row.mcp_servers or ()],
    )
    if row.temperature is not None:
        message.temperature = row.temperature
    if row.max_steps is not None:
        message.max_steps = row.max_steps
    message.routing_mode = ROUTING_MODES.get(row.routing_mode or "", 0)
    if catalog is not None:
        message.unsupported_models.extend(m for m in [row.default_model, *row.fallback_models] if m not in catalog)
    return message


def agent_revision(row: AgentRevisionRow) -> pb.AgentRevision:
    """A stored revision as a proto: the agent's settings at that revision."""
    settings = row.settings
    snapshot = pb.Agent(
        id=row.agent_id,
        key=settings["key"],
        display_name=settings["display_name"],
        system_prompt=settings["system_prompt"],
        default_model=settings["default_model"],
        fallback_models=settings["fallback_models"],
        tools=[tool_from_json(t) for t in settings["tools"]],
        metadata=struct(settings["metadata"]),
        allowed_tenants=settings.get("allowed_tenants") or [],
        builtin_tools=settings.get("builtin_tools") or [],
        mcp_servers=[agent_mcp_server(entry) for entry in settings.get("mcp_servers") or ()],
        revision=row.revision,
    )
    if settings.get("temperature") is not None:
        snapshot.temperature = settings["temperature"]
    if settings.get("max_steps") is not None:
        snapshot.max_steps = settings["max_steps"]
    snapshot.routing_mode = ROUTING_MODES.get(settings.get("routing_mode") or "", 0)
    return pb.AgentRevision(revision=row.revision, agent=snapshot, create_time=timestamp(row.create_time))


def conversation(row: ConversationRow) -> pb.Conversation:
    """A stored conversation as a proto."""
    return pb.Conversation(
        id=row.id,
        title=row.title,
        metadata=struct(row.metadata_),
        create_time=timestamp(row.create_time),
        update_time=timestamp(row.update_time),
        delete_time=timestamp(row.delete_time),
        expire_time=timestamp(row.expire_time),
        etag=conversation_etag(row),
    )


def settings_from_proto(settings: pb.SessionSettings) -> Settings:
    """Session settings from a proto."""
    return Settings(
        model=settings.model,
        temperature=settings.temperature if settings.HasField("temperature") else None,
        max_output_tokens=settings.max_output_tokens if settings.HasField("max_output_tokens") else None,
        tools=[tool_to_json(t) for t in settings.tools],
        fallback_models=list(settings.fallback_models),
        system_prompt=settings.system_prompt,
        allowed_tools=list(settings.allowed_tools),
        history_token_budget=(settings.history_token_budget if settings.HasField("history_token_budget") else None),
    )


def settings_to_proto(settings: Settings) -> pb.SessionSettings:
    """Session settings as a proto."""
    message = pb.SessionSettings(
        model=settings.model,
        tools=[tool_from_json(t) for t in settings.tools],
        fallback_models=settings.fallback_models,
        system_prompt=settings.system_prompt,
        allowed_tools=settings.allowed_tools,
    )
    if settings.history_token_budget is not None:
        message.history_token_budget = settings.history_token_budget
    if settings.temperature is not None:
        message.temperature = settings.temperature
    if settings.max_output_tokens is not None:
        message.max_output_tokens = settings.max_output_tokens
    return message


def session(view: SessionView) -> pb.Session:
    """A session with its overrides and effective settings."""
    row = view.row
    return pb.Session(
        id=row.id,
        conversation_id=row.conversation_id,
        agent_id=row.agent_id or "",
        overrides=settings_to_proto(view.overrides),
        effective_settings=settings_to_proto(view.effective),
        metadata=struct(row.metadata_),
        create_time=timestamp(row.create_time),
        update_time=timestamp(row.update_time),
        agent_revision=row.agent_revision or 0,
        status=pb.SESSION_STATUS_ENDED if row.status == "ended" else pb.SESSION_STATUS_ACTIVE,
        end_time=timestamp(row.end_time),
        parent_session_id=getattr(row, "parent_session_id", None) or "",
        parent_message_id=getattr(row, "parent_message_id", None) or "",
    )


BUDGET_PERIOD_TO_PROTO = {"day": pb.BUDGET_PERIOD_DAY, "month": pb.BUDGET_PERIOD_MONTH}
BUDGET_PERIOD_FROM_PROTO = {
    pb.BUDGET_PERIOD_UNSPECIFIED: "month",
    pb.BUDGET_PERIOD_DAY: "day",
    pb.BUDGET_PERIOD_MONTH: "month",
}
SCOPE_TO_PROTO = {"admin": pb.API_KEY_SCOPE_ADMIN, "client": pb.API_KEY_SCOPE_CLIENT}
SCOPE_FROM_PROTO = {value: key for key, value in SCOPE_TO_PROTO.items()}
DIMENSION_FROM_PROTO = {
    pb.USAGE_DIMENSION_TENANT: "tenant",
    pb.USAGE_DIMENSION_AGENT: "agent",
    pb.USAGE_DIMENSION_SESSION: "session",
    pb.USAGE_DIMENSION_MODEL: "model",
    pb.USAGE_DIMENSION_DAY: "day",
}


def tenant_fields(tenant: pb.Tenant) -> TenantFields:
    """The writable fields of a proto Tenant."""
    return TenantFields(
        id=tenant.id,
        display_name=tenant.display_name,
        budget_period=BUDGET_PERIOD_FROM_PROTO.get(tenant.budget.period, ""),
        max_tokens=tenant.budget.max_tokens if tenant.budget.HasField("max_tokens") else None,
        max_cost_usd=_budget_usd(tenant.budget.max_cost_usd) if tenant.budget.HasField("max_cost_usd") else None,
        requests_per_minute=tenant.rate_limits.requests_per_minute,
        tokens_per_minute=tenant.rate_limits.tokens_per_minute,
    )


def _budget_usd(value: float) -> Decimal:
    """A proto double in US dollars as an exact Decimal; NaN and infinities become
    NaN, which validation refuses."""
    return money(value) if math.isfinite(value) and abs(value) < 1e12 else Decimal("NaN")


def tenant(row: TenantRow) -> pb.Tenant:
    """A stored tenant as a proto."""
    budget = pb.Budget(period=BUDGET_PERIOD_TO_PROTO[row.budget_period])
    if row.max_tokens is not None:
        budget.max_tokens = row.max_tokens
    if row.max_cost_usd is not None:
        budget.max_cost_usd = float(row.max_cost_usd)
    return pb.Tenant(
        id=row.id,
        display_name=row.display_name,
        budget=budget,
        rate_limits=pb.RateLimits(requests_per_minute=row.requests_per_minute, tokens_per_minute=row.tokens_per_minute),
        create_time=timestamp(row.create_time),
        update_time=timestamp(row.update_time),
        delete_time=timestamp(row.delete_time),
    )


def api_key(row: ApiKeyRow) -> pb.ApiKey:
    """A stored API key as a proto; the secret is never included."""
    return pb.ApiKey(
        id=row.id,
        tenant_id=row.tenant_id,
        display_name=row.display_name,
        scope=SCOPE_TO_PROTO[row.scope],
        secret_prefix=row.secret_prefix,
        expire_time=timestamp(row.expire_time),
        create_time=timestamp(row.create_time),
        revoke_time=timestamp(row.revoke_time),
    )


def to_datetime(value: timestamp_pb2.Timestamp, present: bool) -> datetime | None:
    """A Timestamp as naive UTC, or None when the field is unset."""
    return value.ToDatetime() if present else None


def usage_row(row: dict[str, Any]) -> pb.UsageRow:
    """One aggregated usage row as a proto."""
    return pb.UsageRow(
        tenant_id=row.get("tenant", ""),
        agent_id=row.get("agent", "") or "",
        session_id=row.get("session", ""),
        model=row.get("model", ""),
        day=row.get("day", ""),
        # MySQL's SUM returns Decimal; the proto wants plain numbers.
        turns=int(row["turns"]),
        prompt_tokens=int(row["prompt_tokens"]),
        completion_tokens=int(row["completion_tokens"]),
        total_tokens=int(row["prompt_tokens"]) + int(row["completion_tokens"]),
        cost_usd=float(row["cost_usd"]),
    )
