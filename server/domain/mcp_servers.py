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

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy.exc import IntegrityError

from server.domain.common import Principal, require_operator, utcnow
from server.domain.errors import AgentAPIError, Violations, not_found
from server.domain.pagination import PageTokens, page_size
from server.domain.secret_box import SecretBox, secret_key_required
from server.store.db import Database
from server.store.mcp_servers import McpServerRepository
from server.store.models import McpServerRow
from server.tools import mcp
from server.tools.base import TOOL_TIMEOUT, ToolDefinition, ToolFailure

SERVER_ID = re.compile(r"^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$")
TRANSPORTS = (mcp.STREAMABLE_HTTP, mcp.STDIO)
FIELDS = ("display_name", "transport", "url", "headers", "command", "args", "env", "timeout")
# Changing one of these points the registration at another server: its approvals no longer hold.
ENDPOINT_FIELDS = ("transport", "url", "command", "args")
HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,128}$")  # an RFC 9110 token
# Headers the SDK sets itself; a stored value would break the protocol.
RESERVED_HEADERS = frozenset(
    {"host", "content-type", "content-length", "accept", "connection", "transfer-encoding", "last-event-id"}
)
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
MAX_SECRETS = 32
MAX_SECRET_VALUE = 8192
MAX_URL, MAX_COMMAND, MAX_ARGS, MAX_ARG = 2048, 1024, 64, 4096
MAX_TIMEOUT_S = 600.0

STATE_PENDING, STATE_APPROVED, STATE_CHANGED = "pending_approval", "approved", "definition_changed"


@dataclass
class McpServerFields:
    """The writable fields of a server. ``transport`` is ``""`` when unspecified;
    ``timeout_s`` None when unset (30 s)."""

    id: str = ""
    display_name: str = ""
    transport: str = ""
    url: str = ""
    headers: dict[str, str] = field(default_factory=dict, repr=False)
    command: str = ""
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict, repr=False)
    timeout_s: float | None = None

    def set_fields(self) -> list[str]:
        """The fields holding a value (what an empty update mask updates)."""
        present = {
            "display_name": self.display_name,
            "transport": self.transport,
            "url": self.url,
            "headers": self.headers,
            "command": self.command,
            "args": self.args,
            "env": self.env,
            "timeout": self.timeout_s is not None,
        }
        return [name for name, value in present.items() if value]


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
        _validate(fields, list(fields.headers), list(fields.env), violations)
        _validate_secret_values(fields, FIELDS, violations)
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
            row = await _load(McpServerRepository(session), fields.id)
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
            _validate(merged, header_names, env_names, violations)
            _validate_secret_values(merged, chosen, violations)
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
            current = await _load(McpServerRepository(session), server_id)
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


def _validate(fields: McpServerFields, header_names: list[str], env_names: list[str], violations: Violations) -> None:
    """Checks everything but secret values (see :func:`_validate_secret_values`);
    messages name fields and header names, never values."""
    if len(fields.display_name) > 255:
        violations.add("mcp_server.display_name", "must be at most 255 characters")
    if fields.transport not in TRANSPORTS:
        violations.add("mcp_server.transport", "must be MCP_TRANSPORT_STREAMABLE_HTTP or MCP_TRANSPORT_STDIO")
    if fields.timeout_s is not None and not 0 < fields.timeout_s <= MAX_TIMEOUT_S:
        violations.add("mcp_server.timeout", f"must be above 0 and at most {MAX_TIMEOUT_S:g} s, or unset for 30 s")
    http = fields.transport == mcp.STREAMABLE_HTTP
    stdio = fields.transport == mcp.STDIO
    if http:
        _validate_url(fields.url, violations)
    if stdio:
        if not fields.command or len(fields.command) > MAX_COMMAND or "\0" in fields.command:
            violations.add("mcp_server.command", f"is required for stdio: 1 to {MAX_COMMAND} characters, no NUL")
        if len(fields.args) > MAX_ARGS or any(len(a) > MAX_ARG or "\0" in a for a in fields.args):
            violations.add("mcp_server.args", f"at most {MAX_ARGS} arguments of at most {MAX_ARG} characters, no NUL")
    for name, present, wanted in (
        ("url", fields.url, http),
        ("headers", header_names, http),
        ("command", fields.command, stdio),
        ("args", fields.args, stdio),
        ("env", env_names, stdio),
    ):
        if present and not wanted:
            other = "MCP_TRANSPORT_STREAMABLE_HTTP" if name in ("url", "headers") else "MCP_TRANSPORT_STDIO"
            violations.add(f"mcp_server.{name}", f"is only for {other}; clear it (name it in update_mask) if changing")


def _validate_url(url: str, violations: Violations) -> None:
    problem = ""
    try:
        parts = urlsplit(url)
        if not url:
            problem = "is required for streamable HTTP"
        elif len(url) > MAX_URL or any(c.isspace() or ord(c) < 32 for c in url):
            problem = f"must be at most {MAX_URL} characters, without spaces or control characters"
        elif parts.scheme not in ("http", "https") or not parts.hostname:
            problem = "must be an http or https URL with a host"
        elif parts.username is not None or parts.password is not None:
            problem = "must not hold credentials: send them in headers, which are stored encrypted"
        else:
            parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        problem = "is not a valid URL"
    if problem:
        violations.add("mcp_server.url", problem)


def _validate_secret_values(fields: McpServerFields, chosen: Iterable[str], violations: Violations) -> None:
    """Checks the headers and env being written (names and values); the
    messages never include a value."""
    if "headers" in chosen:
        if len(fields.headers) > MAX_SECRETS:
            violations.add("mcp_server.headers", f"at most {MAX_SECRETS} headers")
        lowered = [name.lower() for name in fields.headers]
        if len(set(lowered)) != len(lowered):
            violations.add("mcp_server.headers", "names differing only in case are the same header")
        for name, value in fields.headers.items():
            if not HEADER_NAME.match(name):
                violations.add("mcp_server.headers", f"{name[:128]!r} is not a valid header name")
            elif name.lower() in RESERVED_HEADERS or name.lower().startswith("mcp-"):
                violations.add("mcp_server.headers", f"{name!r} is set by the MCP client itself")
            if not value or len(value) > MAX_SECRET_VALUE or any(c in value for c in "\r\n\0"):
                violations.add(
                    "mcp_server.headers",
                    f"the value of {name[:128]!r} must be 1 to {MAX_SECRET_VALUE} characters without CR, LF or NUL",
                )
    if "env" in chosen:
        if len(fields.env) > MAX_SECRETS:
            violations.add("mcp_server.env", f"at most {MAX_SECRETS} variables")
        for name, value in fields.env.items():
            if not ENV_NAME.match(name):
                violations.add("mcp_server.env", f"{name[:128]!r} is not a valid environment variable name")
            if len(value) > MAX_SECRET_VALUE or "\0" in value:
                limit = f"must be at most {MAX_SECRET_VALUE} characters, no NUL"
                violations.add("mcp_server.env", f"the value of {name[:128]!r} {limit}")


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


async def _load(repository: McpServerRepository, server_id: str) -> McpServerRow:
    row = await repository.get(server_id) if SERVER_ID.match(server_id or "") else None
    if row is None:
        raise not_found("mcp_server", server_id)
    return row


def _endpoint_key(row: McpServerRow) -> tuple[Any, ...]:
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
