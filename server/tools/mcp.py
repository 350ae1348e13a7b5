"""The MCP client adapter: lists and calls the tools of one MCP server through
the official ``mcp`` SDK (``mcp.Client``), over streamable HTTP or stdio.

Every operation opens its own connection (connect, negotiate, work, close) and
is bounded as a whole by the server's timeout. Failures leave this module as
:class:`~server.tools.base.ToolFailure`:

* unreachable, refused, closed, an HTTP error status, stdio disabled or a
  command that cannot start: TOOL_UNAVAILABLE;
* the timeout: TOOL_TIMEOUT;
* a result with ``isError`` (or a JSON-RPC error answering the call): TOOL_FAILED;
* a tool whose definition hash is not the approved one: TOOL_DEFINITION_CHANGED,
  before the tool is called.

Secret values (header and env values) never reach a message or a log line:
every text this module puts in a ToolFailure, a log record or an output has
them replaced by ``[redacted]``, should a server echo one back.

Cancelling the calling task cancels the MCP request: the SDK runs it inside
anyio, closes the connection (HTTP) or stops the process (stdio), and the
CancelledError propagates unchanged.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import anyio
import httpx2
from mcp import Client, MCPError, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp_types import CONNECTION_CLOSED, REQUEST_TIMEOUT, CallToolResult, Implementation
from pydantic import ValidationError

from server.tools.base import (
    TOOL_DEFINITION_CHANGED,
    TOOL_FAILED,
    TOOL_TIMEOUT,
    TOOL_UNAVAILABLE,
    ToolDefinition,
    ToolFailure,
)

log = logging.getLogger(__name__)

STREAMABLE_HTTP = "streamable_http"
STDIO = "stdio"
DEFAULT_TIMEOUT_S = 30.0
# Function names the OpenAI tools API accepts; MCP tools reach the model as <server id>__<tool name>.
FUNCTION_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
SEPARATOR = "__"
# A listing is read page by page up to these bounds, so a server cannot stall us with endless cursors.
MAX_TOOLS = 1000
MAX_LIST_PAGES = 50
# Longest server-supplied error text kept in a ToolFailure message.
MAX_ERROR_TEXT = 2000
# Secret values shorter than this are not redacted from texts (they would match ordinary words).
MIN_REDACTED_LENGTH = 4
CLIENT_INFO = Implementation(name="agentapi", version="0.1.0")

T = TypeVar("T")


@dataclass(frozen=True)
class McpEndpoint:
    """How to reach one MCP server, secrets decrypted. Its repr leaves the secrets out.

    Attributes:
        server_id: the registered id (``McpServer.id``).
        transport: ``streamable_http`` or ``stdio``.
        url: streamable HTTP endpoint.
        headers: HTTP headers sent with every request (secret values).
        command: stdio executable.
        args: stdio arguments.
        env: environment variables added to the stdio process (secret values);
            it does not inherit agentapi's own environment, only the SDK's safe
            defaults (PATH, HOME, ...).
        timeout_s: seconds one listing or call may take, connecting included.
        allow_stdio: whether stdio servers may be started (AGENTAPI_ALLOW_STDIO_MCP).
        unavailable: when set, why the server cannot be used (e.g. its stored
            secrets cannot be decrypted): every operation fails with
            TOOL_UNAVAILABLE and this message, without connecting.
    """

    server_id: str
    transport: str
    url: str = ""
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    command: str = ""
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict, repr=False)
    timeout_s: float = DEFAULT_TIMEOUT_S
    allow_stdio: bool = False
    unavailable: str = ""

    def redact(self, text: str) -> str:
        """``text`` with every header and env value replaced by ``[redacted]``."""
        for value in sorted({*self.headers.values(), *self.env.values()}, key=len, reverse=True):
            if len(value) >= MIN_REDACTED_LENGTH:
                text = text.replace(value, "[redacted]")
        return text


def definition_hash(name: str, description: str, input_schema: Mapping[str, Any]) -> str:
    """Hex SHA-256 of the canonical JSON (sorted keys, no spaces, UTF-8) of
    ``{"name", "description", "inputSchema"}``: what an operator approves."""
    canonical = json.dumps(
        {"name": name, "description": description, "inputSchema": input_schema},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class McpToolSpec:
    """A tool as the server lists it: name, description (``""`` when absent)
    and ``inputSchema`` (a JSON Schema object)."""

    name: str
    description: str
    input_schema: dict[str, Any]

    @property
    def definition_hash(self) -> str:
        """See :func:`definition_hash`."""
        return definition_hash(self.name, self.description, self.input_schema)


def function_name(server_id: str, tool_name: str) -> str | None:
    """``<server id>__<tool name>``, the name the model sees; None when it would
    be over 64 characters or hold characters other than ``[a-zA-Z0-9_-]``.
    Server ids hold no ``_``, so the first ``__`` always splits it back."""
    name = f"{server_id}{SEPARATOR}{tool_name}"
    return name if FUNCTION_NAME.match(name) else None


def split_function_name(name: str) -> tuple[str, str] | None:
    """(server id, tool name) of a name made by :func:`function_name`; None otherwise."""
    server_id, separator, tool_name = name.partition(SEPARATOR)
    return (server_id, tool_name) if separator and server_id and tool_name else None


def tool_definitions(server_id: str, approved: Iterable[McpToolSpec]) -> list[ToolDefinition]:
    """The :class:`ToolDefinition` s of a server's approved tools, with the approved
    description and schema (never a newer one the server lists), named
    ``<server id>__<tool name>``, executor ``mcp:<server id>``.

    A tool whose prefixed name would be over 64 characters or hold characters
    other than ``[a-zA-Z0-9_-]`` is skipped, with a warning in the log:
    OpenAI-compatible upstreams refuse such names, and renaming it would let
    two tools collide. ``ListMcpServerTools`` shows it with an empty
    ``function_name``, so an operator sees why it is missing.
    """
    definitions = []
    for spec in approved:
        name = function_name(server_id, spec.name)
        if name is None:
            log.warning("MCP server %r: tool %r skipped, its name cannot be a function name", server_id, spec.name)
            continue
        schema = spec.input_schema or {"type": "object", "properties": {}}
        definitions.append(ToolDefinition(name, spec.description, schema, executor=f"mcp:{server_id}"))
    return definitions


def result_text(result: CallToolResult) -> str:
    """The text a model receives from a tool result: the text items joined by
    newlines; other items described briefly (``[image/png, 1234 bytes]``,
    ``[resource file:///a.txt, text/plain, 12 bytes]``, ``[resource link
    https://...]``); ``structuredContent`` as JSON when there is no text item."""
    parts: list[str] = []
    has_text = False
    for item in result.content:
        kind = getattr(item, "type", "")
        if kind == "text":
            parts.append(item.text)  # type: ignore[union-attr]
            has_text = True
        elif kind in ("image", "audio"):
            parts.append(f"[{item.mime_type}, {_base64_size(item.data)} bytes]")  # type: ignore[union-attr]
        elif kind == "resource":
            resource = item.resource  # type: ignore[union-attr]
            text = getattr(resource, "text", None)
            size = len(text.encode()) if text is not None else _base64_size(getattr(resource, "blob", ""))
            parts.append(f"[resource {resource.uri}, {resource.mime_type or 'unknown type'}, {size} bytes]")
        elif kind == "resource_link":
            parts.append(f"[resource link {item.uri}]")  # type: ignore[union-attr]
        else:
            parts.append(f"[{kind or 'unknown'} content]")
    if not has_text and result.structured_content is not None:
        parts.append(json.dumps(result.structured_content, ensure_ascii=False))
    return "\n".join(parts)


def _base64_size(data: str) -> int:
    return len(data) * 3 // 4 - (2 if data.endswith("==") else 1 if data.endswith("=") else 0)


async def list_tools(endpoint: McpEndpoint) -> list[McpToolSpec]:
    """Every tool the server lists (``tools/list``, all pages, at most
    ``MAX_TOOLS``), in the server's order. Raises :class:`ToolFailure`
    (TOOL_UNAVAILABLE, TOOL_TIMEOUT)."""
    return await _run(endpoint, _list_all)


class McpToolExecutor:
    """Runs calls to one MCP server's approved tools (a :class:`~server.tools.base.ToolExecutor`).

    Args:
        endpoint: the server, secrets decrypted.
        approved: tool name (unprefixed) -> its approved definition hash.
    """

    def __init__(self, endpoint: McpEndpoint, approved: Mapping[str, str]) -> None:
        self.endpoint = endpoint
        self.approved = dict(approved)

    @property
    def executor(self) -> str:
        """``mcp:<server id>``, as on the tool definitions and stored tool messages."""
        return f"mcp:{self.endpoint.server_id}"

    async def call(self, name: str, arguments: dict[str, Any]) -> str:
        """Calls tool ``name`` (unprefixed) with ``arguments`` and returns its
        text (see :func:`result_text`). Lists the tools first, in the same
        connection, and refuses a tool whose definition hash differs from the
        approved one (TOOL_DEFINITION_CHANGED) without calling it.

        Raises:
            ToolFailure: TOOL_UNAVAILABLE (not approved, no longer listed,
                unreachable), TOOL_TIMEOUT, TOOL_FAILED, TOOL_DEFINITION_CHANGED.
        """
        server = self.endpoint.server_id
        approved = self.approved.get(name)
        if approved is None:
            raise ToolFailure(TOOL_UNAVAILABLE, f"tool {name!r} of MCP server {server!r} is not approved")

        async def work(client: Client) -> str:
            spec = await _find(client, name)
            if spec is None:
                raise ToolFailure(TOOL_UNAVAILABLE, f"MCP server {server!r} no longer lists tool {name!r}")
            if spec.definition_hash != approved:
                raise ToolFailure(
                    TOOL_DEFINITION_CHANGED,
                    f"tool {name!r} of MCP server {server!r} changed its definition after it was approved;"
                    " an operator must approve it again",
                )
            try:
                result = await client.call_tool(name, arguments)
            except MCPError as exc:
                if exc.code in (CONNECTION_CLOSED, REQUEST_TIMEOUT):
                    raise
                raise ToolFailure(TOOL_FAILED, _clip(f"MCP error {exc.code}: {exc.message}")) from None
            if result.is_error:
                text = result_text(result) or "the tool reported an error"
                raise ToolFailure(TOOL_FAILED, _clip(text))
            return result_text(result)

        return self.endpoint.redact(await _run(self.endpoint, work))


async def _list_all(client: Client) -> list[McpToolSpec]:
    specs: list[McpToolSpec] = []
    cursor: str | None = None
    for _ in range(MAX_LIST_PAGES):
        page = await client.list_tools(cursor=cursor)
        specs += [McpToolSpec(t.name, t.description or "", dict(t.input_schema)) for t in page.tools]
        cursor = page.next_cursor
        if not cursor or len(specs) >= MAX_TOOLS:
            break
    return specs[:MAX_TOOLS]


async def _find(client: Client, name: str) -> McpToolSpec | None:
    cursor: str | None = None
    for _ in range(MAX_LIST_PAGES):
        page = await client.list_tools(cursor=cursor)
        for tool in page.tools:
            if tool.name == name:
                return McpToolSpec(tool.name, tool.description or "", dict(tool.input_schema))
        cursor = page.next_cursor
        if not cursor:
            return None
    return None


@asynccontextmanager
async def _connect(endpoint: McpEndpoint) -> AsyncIterator[Client]:
    if endpoint.unavailable:
        raise ToolFailure(TOOL_UNAVAILABLE, endpoint.unavailable)
    if endpoint.transport == STDIO:
        if not endpoint.allow_stdio:
            message = f"MCP server {endpoint.server_id!r} uses stdio, which AGENTAPI_ALLOW_STDIO_MCP disables"
            raise ToolFailure(TOOL_UNAVAILABLE, message)
        params = StdioServerParameters(command=endpoint.command, args=list(endpoint.args), env=dict(endpoint.env))
        async with Client(params, cache=None, client_info=CLIENT_INFO) as client:
            yield client
        return
    # Our own httpx2 client: the only way the SDK takes headers, and its timeouts follow the server's.
    http = create_mcp_http_client(headers=dict(endpoint.headers), timeout=httpx2.Timeout(endpoint.timeout_s))
    async with http:
        transport = streamable_http_client(endpoint.url, http_client=http)
        async with Client(transport, cache=None, client_info=CLIENT_INFO) as client:
            yield client


async def _run(endpoint: McpEndpoint, work: Callable[[Client], Awaitable[T]]) -> T:
    """Connects, runs ``work`` and disconnects within the server's timeout,
    mapping every failure to a ToolFailure."""
    with anyio.move_on_after(endpoint.timeout_s) as scope:
        try:
            async with _connect(endpoint) as client:
                return await work(client)
        except Exception as exc:  # ExceptionGroup included: the SDK's task groups wrap what they raise
            if scope.cancel_called:  # the deadline passed and the SDK turned the cancel into an error
                raise _timeout(endpoint) from None
            raise _failure(endpoint, exc) from None
    raise _timeout(endpoint)


def _timeout(endpoint: McpEndpoint) -> ToolFailure:
    return ToolFailure(
        TOOL_TIMEOUT, f"MCP server {endpoint.server_id!r} did not answer within {endpoint.timeout_s:g} s"
    )


def _leaves(exc: BaseException) -> Iterable[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            yield from _leaves(inner)
    else:
        yield exc


def _failure(endpoint: McpEndpoint, exc: BaseException) -> ToolFailure:
    """The ToolFailure for an exception out of the SDK (possibly a group): a
    ToolFailure inside is kept; otherwise the first leaf decides."""
    leaves = list(_leaves(exc))
    for leaf in leaves:
        if isinstance(leaf, ToolFailure):
            return ToolFailure(leaf.reason, endpoint.redact(leaf.message))
    leaf = leaves[0] if leaves else exc
    server = endpoint.server_id
    kind = type(leaf).__name__
    if isinstance(leaf, httpx2.TimeoutException) or (isinstance(leaf, MCPError) and leaf.code == REQUEST_TIMEOUT):
        return _timeout(endpoint)
    if isinstance(leaf, ValidationError):
        log.warning("MCP server %r sent an invalid answer (%s)", server, kind)
        return ToolFailure(TOOL_FAILED, f"MCP server {server!r} sent an answer that is not valid MCP")
    # Only the class name and our own words: a transport error's text may quote a request.
    log.warning("MCP server %r unavailable: %s", server, kind)
    detail = "it answered with an error" if isinstance(leaf, MCPError) else "no connection, or it closed"
    return ToolFailure(TOOL_UNAVAILABLE, f"MCP server {server!r} is unavailable: {detail} ({kind})")


def _clip(text: str) -> str:
    return text if len(text) <= MAX_ERROR_TEXT else text[:MAX_ERROR_TEXT] + "..."
