"""The writable fields of an MCP server and their validation.

Messages name fields and header or variable names, never a header or env
value: those are secrets (see server/domain/mcp_servers.py).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from server.domain.errors import Violations
from server.tools import mcp

SERVER_ID = re.compile(r"^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$")
TRANSPORTS = (mcp.STREAMABLE_HTTP, mcp.STDIO)
FIELDS = ("display_name", "transport", "url", "headers", "command", "args", "env", "timeout")
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


def validate(fields: McpServerFields, header_names: list[str], env_names: list[str], violations: Violations) -> None:
    """Checks everything but secret values (see :func:`validate_secret_values`);
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
        validate_url(fields.url, violations)
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


def validate_url(url: str, violations: Violations) -> None:
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


def validate_secret_values(fields: McpServerFields, chosen: Iterable[str], violations: Violations) -> None:
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
