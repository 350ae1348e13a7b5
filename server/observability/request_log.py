"""One structured log line per request, gRPC (logger ``agentapi.rpc``) and HTTP
(logger ``agentapi.bridge``).

Text format: ``<method or route> <status> <ms>ms reason=... tenant=...
session=... request_id=... trace_id=...`` (empty fields left out). JSON
format (``--log-format json``): the same message plus each field as its own
key (``method``, ``route``, ``status``, ``reason``, ``duration_ms``,
``tenant``, ``session``, ``request_id``, ``trace_id``). No secret and no
message content is ever logged here: only names, codes, ids and times.

The layers below fill in what only they know (the caller's tenant, the
error's reason) through :func:`note`, on a per-request holder the outermost
layer puts in a context variable: a mutable object, so a value set in a
child task (an SSE stream's) still reaches the line.
"""

from __future__ import annotations

import contextvars
import logging
from typing import Any

RPC_LOG = logging.getLogger("agentapi.rpc")
HTTP_LOG = logging.getLogger("agentapi.bridge")

_request: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar("agentapi_request", default=None)


def begin() -> dict[str, str]:
    """A fresh holder for the request being served in this context."""
    holder: dict[str, str] = {}
    _request.set(holder)
    return holder


def note(**fields: str) -> None:
    """Adds ``fields`` (``tenant``, ``reason``, ``session``, ``code``) to the current request's line."""
    holder = _request.get()
    if holder is not None:
        holder.update(fields)


def _line(head: str, fields: dict[str, Any]) -> str:
    tail = " ".join(f"{k}={v}" for k, v in fields.items() if v not in ("", None) and k not in _IN_HEAD)
    return f"{head} {tail}" if tail else head


_IN_HEAD = frozenset({"method", "route", "status", "duration_ms", "path"})


def rpc(method: str, code: str, duration_s: float, level: int = logging.INFO, **fields: str) -> None:
    """Logs one gRPC call: ``/pkg.Service/Method OK 12.3ms ...``."""
    if not RPC_LOG.isEnabledFor(level):
        return
    ms = round(duration_s * 1000, 1)
    extra = {"method": method, "status": code, "duration_ms": ms, **fields}
    RPC_LOG.log(level, _line(f"{method} {code} {ms}ms", extra), extra=extra)


def http(method: str, path: str, route: str, status: int | str, duration_s: float, **fields: str) -> None:
    """Logs one bridge request: ``POST /v1/chat/completions 200 12.3ms request_id=...``."""
    if not HTTP_LOG.isEnabledFor(logging.INFO):
        return
    ms = round(duration_s * 1000, 1)
    extra = {"method": method, "path": path, "route": route, "status": status, "duration_ms": ms, **fields}
    HTTP_LOG.info(_line(f"{method} {path} {status} {ms:.1f}ms", extra), extra=extra)
