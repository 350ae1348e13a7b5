"""MCP servers: registration (operators only), tool discovery and approval,
and the toolsets a run uses.

Rules where the issue is silent:

* Header and env values are secrets: sealed with :class:`SecretBox` before
  they are stored, never returned (only their names), never put in a message
  or a log line. Sending any without ``AGENTAPI_SECRET_KEY`` is refused
  (FAILED_PRECONDITION, SECRET_KEY_REQUIRED). A URL with credentials in it
  (``https://user:pass@host``) is refused: they belong in ``headers``.
* Stdio servers are refused (FAILED_PRECONDITION, STDIO_MCP_DISABLED) unless
  ``AGENTAPI_ALLOW_STDIO_MCP=1``, when registered and when used; a stdio
  process gets only the stored env over the SDK's safe defaults, never
  agentapi's own environment.
* Approval records each tool's definition (description, schema, hash) as it
  was approved; models are shown that approved definition, and a call is
  refused when the server's current one hashes differently. Changing
  transport, url, command or args withdraws every approval (another server).
* Deletion is immediate, not soft (AIP-164 allows either): the secrets go at once.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import IntegrityError

from server.domain.common import Principal, require_operator, utcnow
from server.domain.errors import AgentAPIError, Violations, not_found
from server.domain.mcp_server_fields import (
    FIELDS,
    SERVER_ID,
    McpServerFields,
    validate,
    validate_secret_values,
)
from server.domain.pagination import PageTokens, page_size
from server.domain.secret_box import SecretBox, secret_key_required
from server.store.db import Database
from server.store.mcp_servers import McpServerRepository
from server.store.models import McpServerRow
from server.tools import mcp
from server.tools.base import TOOL_TIMEOUT, ToolDefinition, ToolFailure

STATE_PENDING, STATE_APPROVED, STATE_CHANGED = "pending_approval", "approved", "definition_changed"


@dataclass(frozen=True)
class McpToolView:
    """A listed tool with its approval state (``pending_approval``,
    ``approved``, ``definition_changed``) and the name the model sees (``""``
    when the tool cannot be offered: see :func:`server.tools.mcp.function_name`)."""

    spec: mcp.McpToolSpec
    definition_hash: str
    state: str
    function_name: str


@dataclass(frozen=True)
class McpToolset:
    """What a run needs of one server: the approved tools as the model sees
    them, and the executor that calls them (``executor.executor`` is
    ``mcp:<server id>``; call it with the unprefixed tool name)."""

    server_id: str
    definitions: list[ToolDefinition]
    executor: mcp.McpToolExecutor


class McpServerService:
    """Registers MCP servers and approves their tools (operators only), and builds
    the toolsets of runs.

    Args:
        db: the database.
        tokens: page token signer.
        secret_key: ``AGENTAPI_SECRET_KEY`` (None: no secrets may be stored).
        allow_stdio: ``AGENTAPI_ALLOW_STDIO_MCP``.
    """

    def __init__(self, db: Database, tokens: PageTokens, secret_key: str | None, allow_stdio: bool) -> None:
        self.db = db
        self.tokens = tokens
        self.box = SecretBox(secret_key)
        self.allow_stdio = allow_stdio

    async def create(self, principal: Principal, fields: McpServerFields) -> McpServerRow:
        """Registers a server. Raises PERMISSION_DENIED (OPERATOR_REQUIRED), INVALID_ARGUMENT,
        ALREADY_EXISTS (MCP_SERVER_ALREADY_EXISTS), FAILED_PRECONDITION
        (STDIO_MCP_DISABLED, SECRET_KEY_REQUIRED)."""
        require_operator(principal)
        self._check_stdio_allowed(fields.transport)
        violations = Violations()
        if not SERVER_ID.match(fields.id):
            violations.add(
                "mcp_server.id", "must be 1 to 63 of a-z, 0-9 and '-', starting with a letter, not ending with '-'"
            )
        validate(fields, list(fields.headers), list(fields.env), violations)
        validate_secret_values(fields, FIELDS, violations)
        violations.raise_if_any()
        now = utcnow()
        row = McpServerRow(
            id=fields.id,
            display_name=fields.display_name,
            transport=fields.transport,
            url=fields.url,
            command=fields.command,
            args=list(fields.args),
            header_names=sorted(fields.headers),
            env_names=sorted(fields.env),
            secrets=self._seal(fields.headers, fields.env),
            timeout_ms=_timeout_ms(fields.timeout_s),
            tools=None,
            tools_discover_time=None,
            approved_tools={},
            create_time=now,
            update_time=now,
        )
        async with self.db.session() as session:
            repository = McpServerRepository(session)
            if await repository.get(fields.id) is not None:
                raise _exists(fields.id)
            session.add(row)
            try:
                await session.commit()
            except IntegrityError as exc:
                raise _exists(fields.id) from exc
        return row

    async def get(self, principal: Principal, server_id: str) -> McpServerRow:
        """One server. Raises PERMISSION_DENIED, NOT_FOUND (MCP_SERVER_NOT_FOUND)."""
        require_operator(principal)
        async with self.db.session() as session:
            return await _load(McpServerRepository(session), server_id)

    async def list(self, principal: Principal, size: int, token: str) -> tuple[list[McpServerRow], str]:
        """A page of servers by (create_time, id), and the next page token."""
        require_operator(principal)
        limit = page_size(size)
        params = {"kind": "mcp_servers"}
        async with self.db.session() as session:
            rows = await McpServerRepository(session).page(self.tokens.time_cursor(token, params), limit + 1)
        return self.tokens.page(rows, limit, params)

    async def update(self, principal: Principal, fields: McpServerFields, paths: list[str]) -> McpServerRow:
        """Updates the fields in ``paths`` (empty: the fields set in ``fields``);
        a map named in the mask is replaced whole. Raises as :meth:`create`, and
        NOT_FOUND (MCP_SERVER_NOT_FOUND); FAILED_PRECONDITION (SECRET_KEY_MISMATCH)
        when headers or env change and the stored ones cannot be opened."""
        require_operator(principal)
        violations = Violations()
        for path in paths:
            if path not in FIELDS:
                violations.add("update_mask", f"unknown or read-only field {path!r}")
        violations.raise_if_any()
        chosen = set(paths or fields.set_fields())
        async with self.db.session() as session:
            row = await _load(McpServerRepository(session), fields.id, lock=True)
            merged = McpServerFields(
                id=row.id,
                display_name=fields.display_name if "display_name" in chosen else row.display_name,
                transport=fields.transport if "transport" in chosen else row.transport,
                url=fields.url if "url" in chosen else row.url,
                command=fields.command if "command" in chosen else row.command,
                args=list(fields.args) if "args" in chosen else list(row.args),
                timeout_s=fields.timeout_s if "timeout" in chosen else row.timeout_ms / 1000,
                headers=fields.headers if "headers" in chosen else {},
                env=fields.env if "env" in chosen else {},
            )
            self._check_stdio_allowed(merged.transport)
            header_names = sorted(merged.headers) if "headers" in chosen else list(row.header_names)
            env_names = sorted(merged.env) if "env" in chosen else list(row.env_names)
            validate(merged, header_names, env_names, violations)
            validate_secret_values(merged, chosen, violations)
            violations.raise_if_any()
            if chosen & {"headers", "env"}:
                stored = self.box.open(row.secrets)
                headers = merged.headers if "headers" in chosen else stored.get("headers", {})
                env = merged.env if "env" in chosen else stored.get("env", {})
                row.secrets = self._seal(headers, env)
                row.header_names, row.env_names = sorted(headers), sorted(env)
            before = _endpoint_key(row)
            row.display_name, row.transport, row.url = merged.display_name, merged.transport, merged.url
            row.command, row.args = merged.command, list(merged.args)
            row.timeout_ms = _timeout_ms(merged.timeout_s)
            if _endpoint_key(row) != before:
                row.approved_tools, row.tools, row.tools_discover_time = {}, None, None
            row.update_time = utcnow()
            await session.commit()
        return row

    async def delete(self, principal: Principal, server_id: str) -> McpServerRow:
        """Deletes a server with its secrets and approvals. Raises PERMISSION_DENIED, NOT_FOUND."""
        require_operator(principal)
        async with self.db.session() as session:
            repository = McpServerRepository(session)
            row = await _load(repository, server_id)
            await repository.delete(row)
            await session.commit()
        return row

    async def list_tools(self, principal: Principal, server_id: str, use_cache: bool) -> list[McpToolView]:
        """The server's tools with their approval states: discovered now (and
        stored), or with ``use_cache`` as last stored. Raises PERMISSION_DENIED,
        NOT_FOUND, UNAVAILABLE (MCP_SERVER_UNAVAILABLE), DEADLINE_EXCEEDED
        (MCP_SERVER_TIMEOUT), FAILED_PRECONDITION (STDIO_MCP_DISABLED, SECRET_KEY_MISMATCH)."""
        require_operator(principal)
        if use_cache:
            async with self.db.session() as session:
                row = await _load(McpServerRepository(session), server_id)
            specs = [mcp.McpToolSpec(t["name"], t["description"], t["input_schema"]) for t in row.tools or []]
            return _views(row, specs)
        row, specs = await self._discover(server_id)
        return _views(row, specs)

    async def approve_tools(
        self, principal: Principal, server_id: str, tool_names: list[str], expected_hashes: dict[str, str]
    ) -> tuple[McpServerRow, list[McpToolView]]:
        """Discovers the tools now and records the current definition of each
        named tool (every listed tool when ``tool_names`` is empty) as approved,
        beside earlier approvals. Raises as :meth:`list_tools`, and NOT_FOUND
        (MCP_TOOL_NOT_FOUND), FAILED_PRECONDITION (TOOL_DEFINITION_CHANGED: a
        tool's hash is not its ``expected_hashes`` entry; nothing is approved),
        ABORTED (MCP_SERVER_CHANGED: the server was updated meanwhile)."""
        require_operator(principal)
        row, specs = await self._discover(server_id)
        listed = {spec.name: spec for spec in specs}
        targets = list(dict.fromkeys(tool_names)) if tool_names else list(listed)
        for name in [*targets, *expected_hashes]:
            if name not in listed:
                raise AgentAPIError(
                    "NOT_FOUND",
                    "MCP_TOOL_NOT_FOUND",
                    f"MCP server {server_id!r} does not list tool {name!r}",
                    {"mcp_server_id": server_id, "tool_name": name},
                )
        for name, expected in expected_hashes.items():
            if listed[name].definition_hash != expected:
                raise AgentAPIError(
                    "FAILED_PRECONDITION",
                    "TOOL_DEFINITION_CHANGED",
                    f"tool {name!r} changed since its hash {expected!r} was read; list the tools and review it again",
                    {"mcp_server_id": server_id, "tool_name": name},
                )
        now = utcnow()
        async with self.db.session() as session:
            current = await _load(McpServerRepository(session), server_id, lock=True)
            if _endpoint_key(current) != _endpoint_key(row):
                raise AgentAPIError(
                    "ABORTED", "MCP_SERVER_CHANGED", f"MCP server {server_id!r} was updated during approval; retry"
                )
            approved = dict(current.approved_tools or {})
            for name in targets:
                spec = listed[name]
                approved[name] = {
                    "description": spec.description,
                    "input_schema": spec.input_schema,
                    "definition_hash": spec.definition_hash,
                    "approve_time": now.isoformat(),
                }
            current.approved_tools = approved
            current.update_time = now
            await session.commit()
        return current, _views(current, specs)

    async def toolset(self, server_id: str) -> McpToolset:
        """The approved tools of a server and their executor, for a run (no
        operator check: the run decides which servers its agent may use).
        Reads the database only; each call later connects to the server.
        Raises NOT_FOUND (MCP_SERVER_NOT_FOUND)."""
        found = await self.toolsets([server_id])
        if server_id not in found:
            raise not_found("mcp_server", server_id)
        return found[server_id]

    async def toolsets(self, server_ids: Iterable[str]) -> dict[str, McpToolset]:
        """:meth:`toolset` for several servers in one query; ids not registered
        are absent from the result. A server whose secrets cannot be opened, or
        a stdio server while stdio is disabled, still gets its definitions; its
        calls fail with TOOL_UNAVAILABLE, so the run goes on."""
        async with self.db.session() as session:
            rows = await McpServerRepository(session).get_many(server_ids)
        result = {}
        for row in rows:
            approved = row.approved_tools or {}
            specs = [
                mcp.McpToolSpec(name, entry["description"], entry["input_schema"])
                for name, entry in sorted(approved.items())
            ]
            hashes = {name: entry["definition_hash"] for name, entry in approved.items()}
            executor = mcp.McpToolExecutor(self._endpoint(row, strict=False), hashes)
            result[row.id] = McpToolset(row.id, mcp.tool_definitions(row.id, specs), executor)
        return result

    async def _discover(self, server_id: str) -> tuple[McpServerRow, list[mcp.McpToolSpec]]:
        """Lists the server's tools over MCP and stores the listing (unless the
        server was changed or deleted meanwhile)."""
        async with self.db.session() as session:
            row = await _load(McpServerRepository(session), server_id)
        endpoint = self._endpoint(row, strict=True)
        try:
            specs = await mcp.list_tools(endpoint)
        except ToolFailure as exc:
            if exc.reason == TOOL_TIMEOUT:
                raise AgentAPIError("DEADLINE_EXCEEDED", "MCP_SERVER_TIMEOUT", exc.message) from None
            raise AgentAPIError("UNAVAILABLE", "MCP_SERVER_UNAVAILABLE", exc.message) from None
        async with self.db.session() as session:
            current = await McpServerRepository(session).get(server_id)
            if current is not None and _endpoint_key(current) == _endpoint_key(row):
                current.tools = [
                    {"name": s.name, "description": s.description, "input_schema": s.input_schema} for s in specs
                ]
                current.tools_discover_time = utcnow()
                await session.commit()
                row = current
        return row, specs

    def _endpoint(self, row: McpServerRow, strict: bool) -> mcp.McpEndpoint:
        """The row as an endpoint, secrets opened. ``strict``: raise FAILED_PRECONDITION
        (SECRET_KEY_MISMATCH, STDIO_MCP_DISABLED); else an endpoint whose calls fail."""
        if strict and row.transport == mcp.STDIO:
            self._check_stdio_allowed(row.transport)
        unavailable = ""
        try:
            secrets = self.box.open(row.secrets)
        except AgentAPIError as exc:
            if strict:
                raise
            secrets, unavailable = {}, f"MCP server {row.id!r}: {exc.message}"
        return mcp.McpEndpoint(
            server_id=row.id,
            transport=row.transport,
            url=row.url,
            headers=secrets.get("headers", {}),
            command=row.command,
            args=tuple(row.args),
            env=secrets.get("env", {}),
            timeout_s=row.timeout_ms / 1000,
            allow_stdio=self.allow_stdio,
            unavailable=unavailable,
        )

    def _check_stdio_allowed(self, transport: str) -> None:
        if transport == mcp.STDIO and not self.allow_stdio:
            raise AgentAPIError(
                "FAILED_PRECONDITION",
                "STDIO_MCP_DISABLED",
                "stdio MCP servers run commands on the agentapi host and are disabled: set AGENTAPI_ALLOW_STDIO_MCP=1",
            )

    def _seal(self, headers: dict[str, str], env: dict[str, str]) -> str | None:
        if not headers and not env:
            return None
        if not self.box.configured:
            raise secret_key_required()
        return self.box.seal({"headers": dict(headers), "env": dict(env)})


def _views(row: McpServerRow, specs: list[mcp.McpToolSpec]) -> list[McpToolView]:
    approved = row.approved_tools or {}
    views = []
    for spec in specs:
        digest = spec.definition_hash
        entry = approved.get(spec.name)
        if entry is None:
            state = STATE_PENDING
        else:
            state = STATE_APPROVED if entry["definition_hash"] == digest else STATE_CHANGED
        views.append(McpToolView(spec, digest, state, mcp.function_name(row.id, spec.name) or ""))
    return views


async def _load(repository: McpServerRepository, server_id: str, lock: bool = False) -> McpServerRow:
    row = None
    if SERVER_ID.match(server_id or ""):
        row = await (repository.get_for_update(server_id) if lock else repository.get(server_id))
    if row is None:
        raise not_found("mcp_server", server_id)
    return row


def _endpoint_key(row: McpServerRow) -> tuple[Any, ...]:
    # What points a registration at a server: when it changes, it is another server and approvals no longer hold.
    return (row.transport, row.url, row.command, tuple(row.args or ()))


def _timeout_ms(timeout_s: float | None) -> int:
    return max(1, round((mcp.DEFAULT_TIMEOUT_S if timeout_s is None else timeout_s) * 1000))


def _exists(server_id: str) -> AgentAPIError:
    return AgentAPIError(
        "ALREADY_EXISTS",
        "MCP_SERVER_ALREADY_EXISTS",
        f"MCP server {server_id!r} exists",
        {"mcp_server_id": server_id},
    )
