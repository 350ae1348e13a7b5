"""The ``agentapi`` command: ``serve``, ``migrate`` and ``purge``. Flags mirror
the ``AGENTAPI_*`` environment variables and win over them.

What it prints never holds a secret: database URLs are shown with the password
masked (``***``), and keys are never shown, except the development master key,
which is public. A problem an operator can fix (a port in use, a bad setting,
an unreachable database for ``migrate``) is one line on stderr and exit code 1
(2 for a bad setting), not a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import logging
import sys
from collections.abc import Callable
from datetime import timedelta

from server import logs
from server.config import EVENT_LOOPS, LOG_FORMATS, LOG_LEVELS, Config, redact_url


def version() -> str:
    """The installed agentapi version."""
    try:
        return importlib.metadata.version("agentapi")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="agentapi", description="agentapi: a control plane for AI agents")
    parser.add_argument("--version", action="version", version=f"agentapi {version()}")
    commands = parser.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--database-url", help="AGENTAPI_DATABASE_URL (default: SQLite under ./var/)")
    common.add_argument("--log-level", choices=LOG_LEVELS, help="AGENTAPI_LOG_LEVEL (default info)")
    common.add_argument(
        "--log-format", choices=LOG_FORMATS, help="AGENTAPI_LOG_FORMAT: text, or json (one object per line)"
    )
    serve = commands.add_parser("serve", parents=[common], help="run the gRPC server and the JSON bridge")
    serve.add_argument("--llm-base-url", help="AGENTAPI_LLM_BASE_URL (unset: the offline model)")
    serve.add_argument("--llm-api-key", help="AGENTAPI_LLM_API_KEY")
    serve.add_argument("--master-key", help="AGENTAPI_MASTER_KEY (unset: a development key)")
    serve.add_argument("--grpc-addr", help="AGENTAPI_GRPC_ADDR (default 127.0.0.1:50051)")
    serve.add_argument("--http-addr", help="AGENTAPI_HTTP_ADDR (default 127.0.0.1:8080)")
    serve.add_argument("--redis-url", help="AGENTAPI_REDIS_URL (unset: rate limits count in process)")
    serve.add_argument("--only", choices=("grpc", "http"), help="run one of the two servers")
    serve.add_argument("--migrate", action="store_true", help="apply migrations before serving")
    serve.add_argument(
        "--workers", type=int, help="AGENTAPI_WORKERS: processes sharing the gRPC and bridge ports (default 1)"
    )
    serve.add_argument("--event-loop", choices=EVENT_LOOPS, help="AGENTAPI_EVENT_LOOP (default asyncio)")
    commands.add_parser("migrate", parents=[common], help="apply database migrations")
    commands.add_parser(
        "purge",
        parents=[common],
        help="delete soft-deleted agents and conversations, and idempotency records, past their expire_time;"
        " erase the content of deleted messages past theirs; delete the event logs of runs that ended"
        " more than AGENTAPI_EVENT_LOG_RETENTION_S ago",
    )
    return parser


async def _purge(config: Config) -> tuple[int, int, int, int, int]:
    from server.domain.agents import AgentService
    from server.domain.common import utcnow
    from server.domain.conversations import ConversationService
    from server.domain.idempotency import purge_expired
    from server.domain.message_history import purge_expired_messages
    from server.domain.pagination import PageTokens
    from server.store.db import Database
    from server.store.run_events import RunEventStore

    db = Database(config.database_url)
    finished_before = utcnow() - timedelta(seconds=config.event_log_retention_s)
    # A run with no terminal event died; its log is kept as long as the longest run could last, then too.
    abandoned_before = finished_before - timedelta(seconds=config.max_turn_duration_s + config.shutdown_grace_s)
    try:
        tokens = PageTokens(b"")
        return (
            await AgentService(db, tokens).purge(),
            await ConversationService(db, tokens).purge(),
            await purge_expired(db),
            await purge_expired_messages(db),
            await RunEventStore(db).purge(finished_before, abandoned_before),
        )
    finally:
        await db.dispose()


def _migrated(config: Config, upgrade: Callable[[str], None]) -> bool:
    """Migrates the database to head; False (and one line on stderr, the URL
    masked) when it cannot."""
    try:
        upgrade(config.database_url)
    except Exception as exc:
        logging.getLogger("agentapi").debug("migration failed", exc_info=exc)
        print(f"agentapi: cannot migrate {redact_url(config.database_url)}: {_first_line(exc)}", file=sys.stderr)
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``agentapi`` console script."""
    args = _parser().parse_args(argv)
    overrides = {k: v for k, v in vars(args).items() if k not in ("command", "only", "migrate")}
    try:
        config = Config.from_env(**overrides)
        if args.command == "serve":
            config.check(args.only)
        else:
            config.check_settings()
    except ValueError as exc:  # a malformed AGENTAPI_* number, or a setting out of range
        print(f"agentapi: {exc}", file=sys.stderr)
        return 2
    logs.setup(config.log_level, config.log_format, secrets=config.secrets)
    from server.store.migrate import upgrade

    if args.command == "migrate":
        if not _migrated(config, upgrade):
            return 1
        print(f"migrated {redact_url(config.database_url)}")
        return 0
    if args.command == "purge":
        agents, conversations, records, messages, chunks = asyncio.run(_purge(config))
        print(f"purged {agents} expired agents and {conversations} expired conversations")
        print(f"erased the content of {messages} expired deleted messages")
        print(f"deleted {chunks} event log chunks of runs past AGENTAPI_EVENT_LOG_RETENTION_S")
        logging.getLogger("agentapi").info("purged %d expired idempotency records", records)
        return 0
    if args.migrate and not _migrated(config, upgrade):  # once, before any worker starts
        return 1
    from server.readiness import unmigrated

    if problem := unmigrated(config):
        print(f"agentapi: {problem}", file=sys.stderr)
        return 2
    if config.workers > 1:
        from server.workers import supervise

        return supervise(config, args.only)
    from server import observability
    from server.app import ListenError, run

    observability.setup()  # tracing when OTEL_* configures an exporter (each worker does its own)
    try:
        run(config, args.only)
    except ListenError as exc:
        print(f"agentapi: {exc}", file=sys.stderr)
        return 1
    return 0


def _first_line(exc: BaseException) -> str:
    """The first line of an error's message (SQLAlchemy's run on with the statement and a link)."""
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


if __name__ == "__main__":
    sys.exit(main())
