"""Logging setup for the ``agentapi`` command and its workers.

``text`` is one human-readable line per record; ``json`` is one JSON object per
line (``time``, ``level``, ``logger``, ``message``, plus ``worker`` and
``exc_info`` when present), written by python-json-logger: a maintained
formatter for the standard library's logging, so every library's records
(grpc, uvicorn, SQLAlchemy) come out the same way with no wrapper of ours.
Records go to stderr; the command's own announcements stay on stdout.

The configured secrets (keys, the database password) are masked in every
record, whoever wrote it: the code masks what it prints, but a library's
message may quote a secret (an upstream's 401 echoing the key, a driver's
error quoting a URL), and one filter on the handler catches them all.
"""

from __future__ import annotations

import contextvars
import logging
import sys
from collections.abc import Iterable

from pythonjsonlogger.json import JsonFormatter

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
# Chatty at INFO (a line per migration step): shown from WARNING unless debugging.
# httpx and httpcore log every upstream request at INFO: only when debugging.
_QUIET = ("alembic", "httpx", "httpcore")


# The ``x-request-id`` of the call being served (the gRPC interceptor sets it),
# so that every record logged while serving it carries the id the bridge logged.
REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")


class RequestId(logging.Filter):
    """Adds ``request_id`` to a record logged while a call with one is served."""

    def filter(self, record: logging.LogRecord) -> bool:
        if rid := REQUEST_ID.get():
            record.request_id = rid
        return True


class Redact(logging.Filter):
    """Replaces each secret in a record's message and traceback with ``***``."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        # Longest first, so a secret that contains another is masked whole;
        # very short values are no secret worth a false match.
        self.secrets = sorted({s for s in secrets if s and len(s) >= 6}, key=len, reverse=True)

    def add(self, secrets: Iterable[str]) -> None:
        """Masks these too from now on."""
        self.secrets = sorted({*self.secrets, *(s for s in secrets if s and len(s) >= 6)}, key=len, reverse=True)

    def _mask(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.secrets:
            return True
        message = record.getMessage()
        masked = self._mask(message)
        if masked != message:
            record.msg, record.args = masked, ()
        if record.exc_info:
            # Formatted here, masked, and kept as text only: both formatters
            # print exc_text when there is no exc_info to format again.
            record.exc_text = record.exc_text or logging.Formatter().formatException(record.exc_info)
            record.exc_info = None
        if record.exc_text:
            record.exc_text = self._mask(record.exc_text)
        return True


class _Text(logging.Formatter):
    """The text format, with `` [request <id>]`` after the message when the record has one."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        rid = getattr(record, "request_id", "")
        if not rid:
            return text
        first, _, rest = text.partition("\n")
        return f"{first} [request {rid}]" + (f"\n{rest}" if rest else "")


# The filter of the handler :func:`setup` installed, for :func:`mask_also`.
_redact = Redact(())


def mask_also(*secrets: str) -> None:
    """Masks ``secrets`` in every later record: for a secret that arrives at
    run time (an MCP server's token, say) rather than in the configuration."""
    _redact.add(secrets)


def setup(level: str = "info", fmt: str = "text", worker: int | None = None, secrets: Iterable[str] = ()) -> None:
    """Configures the root logger (replacing any handlers) for ``level``
    (debug, info, warning, error) and ``fmt`` (text or json); ``worker`` tags
    each record with a worker's index; ``secrets`` are masked wherever they
    appear in a record."""
    handler = logging.StreamHandler(sys.stderr)
    _redact.secrets = []
    _redact.add(secrets)
    handler.addFilter(_redact)
    handler.addFilter(RequestId())
    tag = "" if worker is None else f" [w{worker}]"
    if fmt == "json":
        handler.setFormatter(
            JsonFormatter(
                "{asctime}{levelname}{name}{message}",
                style="{",
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
                static_fields={} if worker is None else {"worker": worker},
            )
        )
    else:
        handler.setFormatter(_Text(f"%(asctime)s %(levelname)s{tag} %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(LEVELS[level])
    for name in _QUIET:
        logging.getLogger(name).setLevel(logging.DEBUG if level == "debug" else max(logging.WARNING, LEVELS[level]))
