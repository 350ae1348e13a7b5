"""The agent catalog: validation and lifecycle rules."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import datetime, timedelta
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from sqlalchemy import ColumnElement, String, not_, or_
from sqlalchemy.exc import IntegrityError

from server.domain import limits
from server.domain.common import Principal, is_uuid, new_id, require_operator, require_uuid, utcnow
from server.domain.errors import AgentAPIError, Violations, not_found
from server.domain.filtering import FieldMap, compile_filter, like_escape, text_field
from server.domain.pagination import Page, PageTokens, page_size, time_key, time_position
from server.store.db import Database
from server.store.models import AgentRevisionRow, AgentRow
from server.store.repositories import AgentRepository

KEY_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
TOOL_NAME_PATTERN = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
DELETE_RETENTION = timedelta(days=30)
MUTABLE_FIELDS = (
    "key",
    "display_name",
    "system_prompt",
    "default_model",
    "fallback_models",
    "temperature",
    "tools",
    "metadata",
    "allowed_tenants",
    "builtin_tools",
    "mcp_servers",
    "max_steps",
    "routing_mode",
)
DEFAULT_MAX_STEPS = 8
MAX_STEPS_LIMIT = 64
APPROVAL_MODES = ("never", "always", "per_tool")


@dataclass
class AgentFields:
    """The writable fields of an agent, with ``tools`` in OpenAI's JSON shape."""

    key: str = ""
    display_name: str = ""
    system_prompt: str = ""
    default_model: str = ""
    fallback_models: list[str] = field(default_factory=list)
    temperature: float | None = None
    tools: list[dict[str, Any]] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    allowed_tenants: list[str] = field(default_factory=list)
    # Built-in tool names, from the server's registry.
    builtin_tools: list[str] = field(default_factory=list)
    # {"server_id", "allowed_tools": [...], "require_approval": never|always|per_tool,
    #  "approval_required_tools": [...]} per MCP server the agent may use.
    mcp_servers: list[dict[str, Any]] = field(default_factory=list)
    max_steps: int | None = None
    # The default routing of the agent's turns: passthrough, reasoning or auto (None: passthrough).
    routing_mode: str | None = None


def fields_of(row: AgentRow) -> AgentFields:
    """The writable fields of a stored agent."""
    values = {f.name: getattr(row, "metadata_" if f.name == "metadata" else f.name) for f in fields(AgentFields)}
    values["allowed_tenants"] = values["allowed_tenants"] or []
    values["builtin_tools"] = values["builtin_tools"] or []
    values["mcp_servers"] = values["mcp_servers"] or []
    return AgentFields(**values)


def visible_to(row: AgentRow, principal: Principal) -> bool:
    """Operators see every agent; others see unrestricted agents and those naming their tenant."""
    return principal.operator or not row.allowed_tenants or principal.tenant_id in row.allowed_tenants


def schema_problem(schema: dict[str, Any]) -> tuple[str, str] | None:
    """Why ``schema`` is not a valid JSON Schema (Draft 2020-12) of an object:
    (a JSON-pointer-like path suffix, message), or None when it is valid."""
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        suffix = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in exc.absolute_path)
        return suffix, f"not a valid JSON Schema: {exc.message}"
    if schema.get("type", "object") != "object":
        return ".type", "must be 'object': function arguments are a JSON object"
    return None


def validate(agent: AgentFields, prefix: str = "agent", builtin_tools: frozenset[str] | None = None) -> None:
    """Checks every field and raises INVALID_ARGUMENT (FIELD_VIOLATION) naming
    all bad ones: key slug of 1-63, non-empty default model, temperature 0-2,
    distinct fallbacks that differ from the default, function tools with valid
    names and object ``parameters``, built-in tools the registry
    (``builtin_tools``) has, MCP servers named once each, max_steps 1 to 64.
    Raises INVALID_ARGUMENT (LIMIT_EXCEEDED) for a system prompt over
    ``AGENTAPI_MAX_MESSAGE_CHARS`` characters, more tools than
    ``AGENTAPI_MAX_TOOLS`` (128), a tool definition over
    ``AGENTAPI_MAX_TOOL_SCHEMA_BYTES`` (64 KiB of JSON), metadata over
    ``AGENTAPI_MAX_METADATA_KEYS`` keys (64) or ``AGENTAPI_MAX_METADATA_BYTES``
    (16 KiB of JSON); sizes are checked first, so an oversized agent is never
    parsed as JSON Schema."""
    violations = Violations()
    limits.check_tools(agent.tools, f"{prefix}.tools", violations)
    limits.check_metadata(agent.metadata, f"{prefix}.metadata", violations)
    limits.check_chars(agent.system_prompt, f"{prefix}.system_prompt", violations)
    limits.raise_if_any(violations)
    _validate_server_tools(agent, prefix, builtin_tools, violations)
    if not KEY_PATTERN.match(agent.key):
        violations.add(f"{prefix}.key", "must be 1 to 63 of a-z, 0-9, '-' or '_', starting with a letter or digit")
    if not agent.default_model.strip():
        violations.add(f"{prefix}.default_model", "must not be empty")
    if agent.temperature is not None and not 0.0 <= agent.temperature <= 2.0:
        violations.add(f"{prefix}.temperature", "must be between 0 and 2")
    seen: set[str] = set()
    for index, model in enumerate(agent.fallback_models):
        if not model.strip():
            violations.add(f"{prefix}.fallback_models[{index}]", "must not be empty")
        elif model == agent.default_model:
            violations.add(f"{prefix}.fallback_models[{index}]", "must differ from default_model")
        elif model in seen:
            violations.add(f"{prefix}.fallback_models[{index}]", "must not repeat another fallback model")
        seen.add(model)
    names: set[str] = set()
    for index, tool in enumerate(agent.tools):
        path = f"{prefix}.tools[{index}]"
        if tool.get("type", "function") != "function":
            violations.add(f"{path}.type", "must be 'function'")
        function = tool.get("function") or {}
        name = function.get("name", "")
        if not TOOL_NAME_PATTERN.match(name):
            violations.add(f"{path}.function.name", "must be 1 to 64 of a-z, A-Z, 0-9, '_' or '-'")
        elif name in names:
            violations.add(f"{path}.function.name", "must be unique among the agent's tools")
        names.add(name)
        parameters = function.get("parameters")
        if parameters is not None:
            problem = schema_problem(parameters)
            if problem:
                violations.add(f"{path}.function.parameters{problem[0]}", problem[1])
    for index, tenant_id in enumerate(agent.allowed_tenants):
        if not KEY_PATTERN.match(tenant_id):
            violations.add(f"{prefix}.allowed_tenants[{index}]", "must be a tenant id")
    violations.raise_if_any()


def _validate_server_tools(
    agent: AgentFields, prefix: str, builtin_tools: frozenset[str] | None, violations: Violations
) -> None:
    for index, name in enumerate(agent.builtin_tools):
        if builtin_tools is not None and name not in builtin_tools:
            known = ", ".join(sorted(builtin_tools)) or "none"
            violations.add(
                f"{prefix}.builtin_tools[{index}]", f"unknown built-in tool {name!r}; the server has: {known}"
            )
        elif name in agent.builtin_tools[:index]:
            violations.add(f"{prefix}.builtin_tools[{index}]", "must not repeat another built-in tool")
    seen: set[str] = set()
    for index, server in enumerate(agent.mcp_servers):
        path = f"{prefix}.mcp_servers[{index}]"
        server_id = server.get("server_id", "")
        if not KEY_PATTERN.match(server_id):
            violations.add(f"{path}.server_id", "must be an MCP server id")
        elif server_id in seen:
            violations.add(f"{path}.server_id", "must not repeat another MCP server")
        seen.add(server_id)
        if server.get("require_approval", "never") not in APPROVAL_MODES:
            violations.add(f"{path}.require_approval", "must be never, always or per_tool")
    if agent.routing_mode not in (None, "passthrough", "reasoning", "auto"):
        violations.add(
            f"{prefix}.routing_mode", "must be passthrough, reasoning or auto (orchestration is not available)"
        )
    if agent.max_steps is not None and not 1 <= agent.max_steps <= MAX_STEPS_LIMIT:
        violations.add(f"{prefix}.max_steps", f"must be between 1 and {MAX_STEPS_LIMIT}")


def etag(row: AgentRow) -> str:
    """A checksum of the agent's revision and update time."""
    return hashlib.sha256(f"{row.id}:{row.revision}:{row.update_time.isoformat()}".encode()).hexdigest()[:16]


def _apply(row: AgentRow, agent: AgentFields, paths: list[str]) -> None:
    for name in paths:
        value = getattr(agent, name)
        setattr(row, "metadata_" if name == "metadata" else name, value)


def _model_used(op: str, value: str) -> ColumnElement[bool]:
    """``model = X``: X is the default model or one of the fallbacks. The
    fallbacks are a JSON array, so match the element's JSON text, which
    reads the same on SQLite and MySQL."""
    if op not in ("=", "!=", ":"):
        raise ValueError("model supports =, != and :")
    in_fallbacks = AgentRow.fallback_models.cast(String).like(f"%{like_escape(json.dumps(value))}%", escape="\\")
    condition = or_(AgentRow.default_model == value, in_fallbacks)
    return not_(condition) if op == "!=" else condition


AGENT_FILTER_FIELDS: FieldMap = {
    "key": text_field(AgentRow.key),
    "display_name": text_field(AgentRow.display_name),
    "default_model": text_field(AgentRow.default_model),
    "model": _model_used,
}


class AgentService:
    """Creates, reads, lists, updates and soft-deletes agents.

    Agents are shared across tenants; only admins may change them.
    """

    def __init__(self, db: Database, tokens: PageTokens, builtin_tools: frozenset[str] | None = None) -> None:
        self.db = db
        self.tokens = tokens
        self.builtin_tools = builtin_tools

    async def create(self, principal: Principal, agent: AgentFields, agent_id: str = "") -> AgentRow:
        """Stores a new agent. Raises INVALID_ARGUMENT (FIELD_VIOLATION,
        INVALID_AGENT_ID), ALREADY_EXISTS (AGENT_ALREADY_EXISTS) for a taken
        key or id, PERMISSION_DENIED (OPERATOR_REQUIRED)."""
        require_operator(principal)
        validate(agent, builtin_tools=self.builtin_tools)
        chosen = require_uuid(agent_id, "agent_id", "INVALID_AGENT_ID") if agent_id else new_id()
        now = utcnow()
        row = AgentRow(id=chosen, revision=1, create_time=now, update_time=now, delete_time=None)
        _apply(row, agent, list(MUTABLE_FIELDS))
        async with self.db.session() as session:
            repo = AgentRepository(session)
            if await repo.get_by_key(agent.key) is not None or await repo.get(chosen) is not None:
                raise _already_exists(agent.key)
            session.add(row)
            await session.flush()
            session.add(AgentRevisionRow(agent_id=chosen, revision=1, settings=asdict(agent), create_time=now))
            try:
                await session.commit()
            except IntegrityError as exc:  # a concurrent create won the race
                raise _already_exists(agent.key) from exc
        return row

    async def get(self, principal: Principal, agent_id_or_key: str) -> AgentRow:
        """The agent by UUID or key. Raises NOT_FOUND (AGENT_NOT_FOUND), also
        for an agent restricted to other tenants."""
        async with self.db.session() as session:
            return await self.resolve(AgentRepository(session), agent_id_or_key, True, principal)

    @staticmethod
    async def resolve(
        repo: AgentRepository, agent_id_or_key: str, include_deleted: bool, principal: Principal
    ) -> AgentRow:
        """Looks up by UUID when the value is one, else by key; hides agents
        the caller's tenant may not use."""
        if not agent_id_or_key:
            raise not_found("agent", agent_id_or_key)
        if is_uuid(agent_id_or_key):
            row = await repo.get(agent_id_or_key.lower())
        else:
            row = await repo.get_by_key(agent_id_or_key)
        if row is None or (row.delete_time is not None and not include_deleted) or not visible_to(row, principal):
            raise not_found("agent", agent_id_or_key)
        return row

    async def list(
        self, principal: Principal, size: int, token: str, show_deleted: bool, filter_text: str = ""
    ) -> Page[AgentRow]:
        """Returns at most ``page_size`` agents the caller may use (1-100,
        default 20) by (create_time, id), with next and previous page tokens.

        ``filter_text`` is AIP-160: ``key``, ``display_name``, ``default_model``
        and ``model`` (the default or any fallback model), e.g.
        ``model = "gpt-4o" AND display_name : "support"``. Raises
        INVALID_ARGUMENT (FIELD_VIOLATION for page_size, INVALID_PAGE_TOKEN,
        INVALID_FILTER).
        """
        condition = compile_filter(filter_text, AGENT_FILTER_FIELDS)
        params = {
            "show_deleted": show_deleted,
            "tenant": principal.tenant_id,
            "operator": principal.operator,
            "filter": filter_text,
        }
        request = self.tokens.start(token, size, params, time_position)
        position = request.position
        rows: list[AgentRow] = []
        async with self.db.session() as session:
            repo = AgentRepository(session)
            # Restricted agents are filtered here, so keep reading until the page is full.
            while len(rows) < request.fetch:
                batch = await repo.page(position, request.fetch, show_deleted, condition, request.backward)
                rows += [row for row in batch if visible_to(row, principal)]
                if len(batch) < request.fetch:
                    break
                position = (batch[-1].create_time, batch[-1].id)
        return self.tokens.finish(rows, request, time_key)

    async def update(
        self, principal: Principal, agent_id: str, agent: AgentFields, paths: list[str], expected_etag: str = ""
    ) -> AgentRow:
        """Updates the masked fields (all writable fields when ``paths`` is empty)
        and bumps the revision. Raises INVALID_ARGUMENT for an unknown mask path
        or a bad field, NOT_FOUND (AGENT_NOT_FOUND), ABORTED (ETAG_MISMATCH)."""
        require_operator(principal)
        violations = Violations()
        for path in paths:
            if path not in MUTABLE_FIELDS:
                violations.add("update_mask", f"unknown or read-only field {path!r}")
        violations.raise_if_any()
        paths = paths or list(MUTABLE_FIELDS)
        async with self.db.session() as session:
            row = await self.resolve(AgentRepository(session), agent_id, False, principal)
            if expected_etag and expected_etag != etag(row):
                raise AgentAPIError(
                    "ABORTED", "ETAG_MISMATCH", "the agent changed since it was read; re-read and retry"
                )
            merged = replace(fields_of(row), **{p: getattr(agent, p) for p in paths})
            validate(merged, builtin_tools=self.builtin_tools)
            _apply(row, merged, paths)
            row.revision += 1
            row.update_time = utcnow()
            session.add(
                AgentRevisionRow(
                    agent_id=row.id, revision=row.revision, settings=asdict(merged), create_time=row.update_time
                )
            )
            await session.commit()
        return row

    async def delete(self, principal: Principal, agent_id: str) -> AgentRow:
        """Soft-deletes (sets ``delete_time``). Raises NOT_FOUND (AGENT_NOT_FOUND)."""
        require_operator(principal)
        async with self.db.session() as session:
            row = await self.resolve(AgentRepository(session), agent_id, False, principal)
            row.delete_time = row.update_time = utcnow()
            row.expire_time = row.delete_time + DELETE_RETENTION
            await session.commit()
        return row

    async def undelete(self, principal: Principal, agent_id: str) -> AgentRow:
        """Restores a soft-deleted agent. Raises NOT_FOUND (AGENT_NOT_FOUND) or
        FAILED_PRECONDITION (AGENT_NOT_DELETED)."""
        require_operator(principal)
        async with self.db.session() as session:
            row = await self.resolve(AgentRepository(session), agent_id, True, principal)
            if row.delete_time is None:
                raise AgentAPIError("FAILED_PRECONDITION", "AGENT_NOT_DELETED", f"agent {row.key!r} is not deleted")
            row.delete_time = row.expire_time = None
            row.update_time = utcnow()
            await session.commit()
        return row

    async def list_revisions(
        self, principal: Principal, agent_id: str, size: int, token: str
    ) -> tuple[list[AgentRevisionRow], str]:
        """A page of the agent's revisions, newest first, and the next token."""
        limit = page_size(size)
        async with self.db.session() as session:
            repo = AgentRepository(session)
            agent = await self.resolve(repo, agent_id, True, principal)
            params = {"kind": "revisions", "agent": agent.id}
            cursor = self.tokens.decode(token, params)
            rows = await repo.revisions(agent.id, int(cursor[0]) if cursor else None, limit + 1)
        return self.tokens.page(rows, limit, params, lambda row: [row.revision])

    async def purge(self, now: datetime | None = None) -> int:
        """Deletes, for good, soft-deleted agents past their expire_time that no
        session uses (a session's transcript keeps its agent). Returns how many."""
        async with self.db.session() as session:
            repo = AgentRepository(session)
            expired = await repo.expired(now or utcnow())
            for row in expired:
                await repo.purge(row)
            await session.commit()
        return len(expired)


def _already_exists(key: str) -> AgentAPIError:
    return AgentAPIError(
        "ALREADY_EXISTS", "AGENT_ALREADY_EXISTS", f"an agent with key {key!r} or this id exists", {"key": key}
    )
