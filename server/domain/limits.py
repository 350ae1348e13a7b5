"""Size limits on what callers send, and the checks that name them.

Every size a caller controls is bounded, and a request over a bound is
refused before anything is stored: INVALID_ARGUMENT with reason
``LIMIT_EXCEEDED`` and a ``BadRequest`` field violation naming the field, the
limit and the setting that changes it (``AGENTAPI_MAX_...``, see
``server/config.py`` and the README's limits table).

The limits are one process-wide frozen :class:`Limits`, installed by
:func:`configure` when the server starts (``server/app.py``). Process-wide
rather than passed to each service because the checks run in free functions
called from several layers (turn inputs, filters, session settings), and an
operator's limits are the same for every one of them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from server.domain.errors import AgentAPIError, FieldViolation, Violations

MIB = 1024 * 1024


@dataclass(frozen=True)
class Limits:
    """Upper bounds on request sizes; each is ``AGENTAPI_MAX_<NAME>``.

    Attributes:
        messages_per_request: input messages in one turn (SendMessage,
            SendStreamingMessage, SubmitToolOutputs, a bridge request).
        message_chars: characters of one message: its text (``content``, or its
            text parts together) and, separately, each tool call's arguments.
            OpenAI refuses a content string over 1,048,576 characters.
        metadata_keys: top-level keys of a conversation's, session's or agent's
            ``metadata``.
        metadata_bytes: ``metadata`` as compact UTF-8 JSON, in bytes.
        tools: function tools of an agent, a session or a turn (OpenAI takes 128).
        tool_schema_bytes: one tool definition as compact UTF-8 JSON, in bytes.
        history_messages: stored messages a turn carries into its prompt, at
            most (whole tool-call groups; the token window usually binds first).
        filter_chars: characters of an AIP-160 ``filter``.
        filter_depth: nesting of a filter: parentheses plus ``NOT``/``-``.
        request_bytes: the JSON bridge's request body, in bytes (413 above it).
            The gRPC server receives messages up to twice this (see
            :attr:`grpc_receive_bytes`).
    """

    messages_per_request: int = 2048
    message_chars: int = 1_048_576
    metadata_keys: int = 64
    metadata_bytes: int = 16 * 1024
    tools: int = 128
    tool_schema_bytes: int = 64 * 1024
    history_messages: int = 1000
    filter_chars: int = 1000
    filter_depth: int = 32
    request_bytes: int = 8 * MIB

    @property
    def grpc_receive_bytes(self) -> int:
        """The gRPC server's largest request message: twice the bridge's body,
        because a JSON body can grow when converted to protobuf (a number in a
        ``Struct``, such as a tool schema's, takes 11 bytes against JSON's 1),
        and a body the bridge accepted must never meet gRPC's own
        RESOURCE_EXHAUSTED, which callers read as a rate limit. At least 4 MiB,
        gRPC's default."""
        return max(2 * self.request_bytes, 4 * MIB)


# The setting that changes each limit, named in the error.
SETTINGS = {name: f"AGENTAPI_MAX_{name.upper()}" for name in Limits.__dataclass_fields__}
# The lowest sane value of each (0 would refuse everything; filter depth is
# also capped by Python's recursion limit, which compiling a filter walks).
MINIMUM = {name: 1 for name in Limits.__dataclass_fields__} | {"request_bytes": 1024, "filter_chars": 10}
MAXIMUM = {"filter_depth": 100}

_active = Limits()


def active() -> Limits:
    """The limits in force."""
    return _active


def configure(limits: Limits) -> None:
    """Installs ``limits`` for this process (the server does so at start)."""
    global _active
    _active = limits


@dataclass(frozen=True)
class LimitViolation(FieldViolation):
    """A field over a size limit (so the error's reason is LIMIT_EXCEEDED);
    ``setting`` is the limit's variable."""

    setting: str = ""


def exceeded(violations: Violations, field_path: str, limit: str, what: str) -> None:
    """Records that ``field_path`` is over the limit ``limit`` (a :class:`Limits`
    field): ``what`` is the actual size in words, e.g. ``"3000 messages"``."""
    bound = getattr(_active, limit)
    description = f"must be at most {bound:,} {_UNITS[limit]} ({SETTINGS[limit]}); got {what}"
    violations.items.append(LimitViolation(field_path, description, SETTINGS[limit]))


_UNITS = {
    "messages_per_request": "messages",
    "message_chars": "characters",
    "metadata_keys": "keys",
    "metadata_bytes": "bytes of JSON",
    "tools": "tools",
    "tool_schema_bytes": "bytes of JSON",
    "history_messages": "messages",
    "filter_chars": "characters",
    "filter_depth": "levels of nesting",
    "request_bytes": "bytes",
}


def raise_if_any(violations: Violations, message: str = "the request has invalid fields") -> None:
    """Raises INVALID_ARGUMENT naming every violation: reason LIMIT_EXCEEDED
    when any field is over a size limit (the message states each such field
    with its limit; ErrorInfo metadata ``limits``: the variables,
    comma-separated), else FIELD_VIOLATION with ``message``."""
    if not violations.items:
        return
    over = [v for v in violations.items if isinstance(v, LimitViolation)]
    if over:
        # The limits go into the message too: the bridge's error body carries
        # the message, not the field violations.
        details = "; ".join(f"{v.field} {v.description}" for v in over)
        others = [v.field for v in violations.items if not isinstance(v, LimitViolation)]
        raise AgentAPIError(
            "INVALID_ARGUMENT",
            "LIMIT_EXCEEDED",
            f"the request exceeds a size limit: {details}" + (f"; also invalid: {', '.join(others)}" if others else ""),
            metadata={"limits": ",".join(dict.fromkeys(v.setting for v in over))},
            field_violations=tuple(violations.items),
        )
    violations.raise_if_any(message)


def json_bytes(value: Any) -> int:
    """Bytes of ``value`` as compact UTF-8 JSON (how it is stored)."""
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str).encode())


def check_metadata(metadata: Mapping[str, Any], path: str, violations: Violations) -> None:
    """Records a violation for more than ``metadata_keys`` top-level keys or
    more than ``metadata_bytes`` of JSON."""
    if len(metadata) > _active.metadata_keys:
        exceeded(violations, path, "metadata_keys", f"{len(metadata):,}")
    size = json_bytes(metadata)
    if size > _active.metadata_bytes:
        exceeded(violations, path, "metadata_bytes", f"{size:,}")


def check_tools(tools: Sequence[Mapping[str, Any]], path: str, violations: Violations) -> None:
    """Records a violation for more than ``tools`` tools, and for each tool
    definition over ``tool_schema_bytes`` of JSON."""
    if len(tools) > _active.tools:
        exceeded(violations, path, "tools", f"{len(tools):,}")
    for index, tool in enumerate(tools):
        size = json_bytes(tool)
        if size > _active.tool_schema_bytes:
            exceeded(violations, f"{path}[{index}]", "tool_schema_bytes", f"{size:,}")


def check_chars(text: str, path: str, violations: Violations) -> None:
    """Records a violation for ``text`` over ``message_chars`` characters."""
    if len(text) > _active.message_chars:
        exceeded(violations, path, "message_chars", f"{len(text):,}")
