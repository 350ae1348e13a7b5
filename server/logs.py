"""Logging setup for the ``agentapi`` command and its workers.

``text`` is one human-readable line per record; ``json`` is one JSON object per
line (``time``, ``level``, ``logger``, ``message``, plus ``worker`` and
``exc_info`` when present), written by python-json-logger: a maintained
formatter for the standard library's logging, so every library's records
(grpc, uvicorn, SQLAlchemy) come out the same way with no wrapper of ours.
Records go to stderr; the command's own announcements stay on stdout.
"""

from __future__ import annotations

import logging
import sys

from pythonjsonlogger.json import JsonFormatter

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
# Chatty at INFO (a line per migration step): shown from WARNING unless debugging.
_QUIET = ("alembic",)


def setup(level: str = "info", fmt: str = "text", worker: int | None = None) -> None:
    """Configures the root logger (replacing any handlers) for ``level``
    (debug, info, warning, error) and ``fmt`` (text or json); ``worker`` tags
    each record with a worker's index."""
    handler = logging.StreamHandler(sys.stderr)
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
        handler.setFormatter(logging.Formatter(f"%(asctime)s %(levelname)s{tag} %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(LEVELS[level])
    for name in _QUIET:
        logging.getLogger(name).setLevel(logging.DEBUG if level == "debug" else max(logging.WARNING, LEVELS[level]))
