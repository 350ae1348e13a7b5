"""SQLAlchemy models: the schema that Alembic migrations create.

Types are chosen to be identical on SQLite and MySQL/MariaDB: UUIDs as
CHAR(36), microsecond timestamps (MySQL's DATETIME defaults to seconds, which
would break cursor ordering), JSON columns, and LONGTEXT for message bodies.
All times are naive UTC.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Numeric,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects import mysql
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

Timestamp = DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
LongText = Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")
LongBlob = LargeBinary().with_variant(mysql.LONGBLOB(), "mysql", "mariadb")
Uuid = String(36)
# US dollars, exact: DECIMAL(20, 10) (ten digits each side of the point). SQLite
# has no DECIMAL and keeps a float; SQLAlchemy still hands back Decimal.
Money = Numeric(20, 10, asdecimal=True)
MONEY_SCALE = 10


class Base(DeclarativeBase):
    """Declarative base with a naming convention, so constraint names are stable."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class AgentRow(Base):
    """An agent of the shared catalog."""

    __tablename__ = "agents"

    id: Mapped[str] = mapped_column(Uuid, primary_key=True)
    key: Mapped[str] = mapped_column(String(63), unique=True)
    display_name: Mapped[str] = mapped_column(String(255), default="")
    system_prompt: Mapped[str] = mapped_column(LongText, default="")
    default_model: Mapped[str] = mapped_column(String(255))
    fallback_models: Mapped[list[str]] = mapped_column(JSON, default=list)
    temperature: Mapped[float | None] = mapped_column(Float, nullable=True)
    tools: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, default=dict)
    revision: Mapped[int] = mapped_column(Integer, default=1)
    allowed_tenants: Mapped[list[str] | None] = mapped_column(JSON, nullable=True, default=list)
    builtin_tools: Mapped[list[str] | None] = mapped_column(JSON, nullable=True, default=list)
    mcp_servers: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON, nullable=True, default=list)
    max_steps: Mapped[int | None] = mapped_column(Integer, nullable=True)
    routing_mode: Mapped[str | None] = mapped_column(String(16), nullable=True)
    create_time: Mapped[datetime] = mapped_column(Timestamp)
    update_time: Mapped[datetime] = mapped_column(Timestamp)
    delete_time: Mapped[datetime | None] = mapped_column(Timestamp, nullable=True)
    expire_time: Mapped[datetime | None] = mapped_column(Timestamp, nullable=True)

    __table_args__ = (Index(None, "create_time", "id"),)


class AgentRevisionRow(Base):
    """An agent's writable fields as of one revision (``settings`` is AgentFields as JSON)."""

    __tablename__ = "agent_revisions"

    agent_id: Mapped[str] = mapped_column(ForeignKey("agents.id"), primary_key=True)
    revision: Mapped[int] = mapped_column(Integer, primary_key=True)
    settings: Mapped[dict[str, Any]] = mapped_column(JSON)
    create_time: Mapped[datetime] = mapped_column(Timestamp)


class ConversationRow(Base):
    """A conversation: a group of sessions owned by one tenant."""

    __tablename__ = "conversations"

    id: Mapped[str] = mapped_column(Uuid, primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64))
    title: Mapped[str] = mapped_column(String(255), default="")
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, default=dict)
    create_time: Mapped[datetime] = mapped_column(Timestamp)
    update_time: Mapped[datetime] = mapped_column(Timestamp)
    delete_time: Mapped[datetime | None] = mapped_column(Timestamp, nullable=True)
    expire_time: Mapped[datetime | None] = mapped_column(Timestamp, nullable=True)

    __table_args__ = (Index(None, "tenant_id", "create_time", "id"),)


class SessionRow(Base):
    """One run of one agent (or plain model), with its setting overrides."""

    __tablename__ = "sessions"

    id: Mapped[str] = mapped_column(Uuid, primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64))
    conversation_id: Mapped[str] = mapped_column(ForeignKey("conversations.id"), index=True)
    agent_id: Mapped[str | None] = mapped_column(ForeignKey("agents.id"), nullable=True)
    agent_revision: Mapped[int | None] = mapped_column(Integer, nullable=True)
    overrides: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, default=dict)
    # "active" or "ended"; an ended session takes no new turns.
    status: Mapped[str] = mapped_column(String(16), default="active", server_default="active")
    # The IN_PROGRESS reply that holds the session (one turn at a time): set by
    # a conditional UPDATE before the upstream is called, cleared by the turn's
    # terminal write or by recovery.
    active_reply_id: Mapped[str | None] = mapped_column(Uuid, nullable=True, default=None)
    # A fork's origin: the session and the message it branched at.
    parent_session_id: Mapped[str | None] = mapped_column(Uuid, nullable=True, default=None)
    parent_message_id: Mapped[str | None] = mapped_column(Uuid, nullable=True, default=None)
    create_time: Mapped[datetime] = mapped_column(Timestamp)
    update_time: Mapped[datetime] = mapped_column(Timestamp)
    end_time: Mapped[datetime | None] = mapped_column(Timestamp, nullable=True)

    __table_args__ = (Index(None, "conversation_id", "create_time", "id"),)


class MessageRow(Base):
    """One message of a session; ``sequence`` is its position, from 1."""

    __tablename__ = "messages"

    id: Mapped[str] = mapped_column(Uuid, primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64))
    session_id: Mapped[str] = mapped_column(ForeignKey("sessions.id"))
    sequence: Mapped[int] = mapped_column(Integer)
    role: Mapped[str] = mapped_column(String(16))
    content: Mapped[str] = mapped_column(LongText, default="")
    tool_calls: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON, nullable=True)
    tool_call_id: Mapped[str] = mapped_column(String(255), default="")
    name: Mapped[str] = mapped_column(String(255), default="")
    model: Mapped[str] = mapped_column(String(255), default="")
    status: Mapped[str] = mapped_column(String(24))
    finish_reason: Mapped[str] = mapped_column(String(32), default="")
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    time_to_first_token_ms: Mapped[int] = mapped_column(Integer, default=0)
    duration_ms: Mapped[int] = mapped_column(Integer, default=0)
    cost_usd: Mapped[Decimal] = mapped_column(Money, default=Decimal(0), server_default="0")
    upstream_request_id: Mapped[str] = mapped_column(String(255), default="")
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    attempts: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON, nullable=True)
    content_parts: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON, nullable=True)
    # Assistant replies: the per-turn options (OpenAI request fields) the turn ran with.
    options: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    # Assistant replies: OpenAI ``logprobs.content`` entries, when asked for and sent.
    logprobs: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON, nullable=True)
    refusal: Mapped[str | None] = mapped_column(Text, nullable=True)
    # Tool messages: who ran the call (client, builtin, mcp:<server id>).
    executor: Mapped[str] = mapped_column(String(140), default="", server_default="")
    # The model step of the run the message belongs to (inputs: 0).
    step: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # Assistant replies: the model's reasoning, the provider's signed thinking
    # blocks (sent back with their tool calls), the completion's reasoning
    # tokens, and how the turn was routed.
    reasoning_content: Mapped[str | None] = mapped_column(Text, nullable=True)
    thinking_blocks: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON, nullable=True)
    reasoning_tokens: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    routing: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    # Assistant replies: the reply that regenerated this one (it left the active path).
    superseded_by: Mapped[str | None] = mapped_column(Uuid, nullable=True, default=None)
    # AIP-164 soft delete: hidden from prompts and reads; the row (usage, cost) stays
    # for billing until purged (content erased at purge_time, usage kept).
    delete_time: Mapped[datetime | None] = mapped_column(Timestamp, nullable=True, default=None)
    expire_time: Mapped[datetime | None] = mapped_column(Timestamp, nullable=True, default=None)
    purge_time: Mapped[datetime | None] = mapped_column(Timestamp, nullable=True, default=None)
    # Tokens of this message as it appears in a prompt, counted once when stored.
    token_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # Assistant replies: the sequence range [first, last] of the history that went into the prompt.
    prompt_first_sequence: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    prompt_last_sequence: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # The process that runs an in-progress reply, so a restart can find the turns it lost.
    runner_id: Mapped[str] = mapped_column(String(128), default="", server_default="")
    # Assistant replies: the idempotency key of the request that ran the turn, so
    # a retry after a crash finds the stored input instead of storing it again.
    idempotency_key: Mapped[str | None] = mapped_column(String(255), nullable=True, default=None)
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, default=dict)
    create_time: Mapped[datetime] = mapped_column(Timestamp)
    update_time: Mapped[datetime] = mapped_column(Timestamp)

    __table_args__ = (
        UniqueConstraint("session_id", "sequence"),
        Index(None, "tenant_id", "create_time"),
        Index(None, "status", "runner_id"),
    )


class TenantRow(Base):
    """A tenant with its budget and rate limits (0 or None means unlimited)."""

    __tablename__ = "tenants"

    id: Mapped[str] = mapped_column(String(63), primary_key=True)
    display_name: Mapped[str] = mapped_column(String(255), default="")
    budget_period: Mapped[str] = mapped_column(String(8), default="month")
    max_tokens: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    max_cost_usd: Mapped[Decimal | None] = mapped_column(Money, nullable=True)
    requests_per_minute: Mapped[int] = mapped_column(BigInteger, default=0)
    tokens_per_minute: Mapped[int] = mapped_column(BigInteger, default=0)
    create_time: Mapped[datetime] = mapped_column(Timestamp)
    update_time: Mapped[datetime] = mapped_column(Timestamp)
    delete_time: Mapped[datetime | None] = mapped_column(Timestamp, nullable=True)

    __table_args__ = (Index(None, "create_time", "id"),)


class ApiKeyRow(Base):
    """An API key; ``secret_hash`` is the SHA-256 of the secret, never the secret."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(Uuid, primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    display_name: Mapped[str] = mapped_column(String(255), default="")
    scope: Mapped[str] = mapped_column(String(16))
    secret_prefix: Mapped[str] = mapped_column(String(16))
    secret_hash: Mapped[str] = mapped_column(String(64), unique=True)
    expire_time: Mapped[datetime | None] = mapped_column(Timestamp, nullable=True)
    create_time: Mapped[datetime] = mapped_column(Timestamp)
    revoke_time: Mapped[datetime | None] = mapped_column(Timestamp, nullable=True)

    __table_args__ = (Index(None, "tenant_id", "create_time", "id"),)


class IdempotencyRecordRow(Base):
    """A request made with an idempotency key, and its stored outcome.

    ``state`` is ``in_progress`` until the first request ends, then ``completed``;
    ``response`` holds the serialized response messages (several for a stream)
    and ``error`` the google.rpc.Status fields of a failed request.
    """

    __tablename__ = "idempotency_records"

    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    method: Mapped[str] = mapped_column(String(255))
    request_hash: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16))
    response: Mapped[bytes | None] = mapped_column(LongBlob, nullable=True)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    runner_id: Mapped[str] = mapped_column(String(128), default="")
    create_time: Mapped[datetime] = mapped_column(Timestamp)
    update_time: Mapped[datetime] = mapped_column(Timestamp)
    expire_time: Mapped[datetime] = mapped_column(Timestamp, index=True)


class McpServerRow(Base):
    """A registered MCP server. ``secrets`` is a Fernet token of the JSON
    ``{"headers": {...}, "env": {...}}`` (values encrypted; only the names are
    stored in clear, in ``header_names`` and ``env_names``). ``tools`` is the
    last discovered listing; ``approved_tools`` maps each approved tool name to
    its approved definition (description, input_schema, definition_hash, approve_time)."""

    __tablename__ = "mcp_servers"

    id: Mapped[str] = mapped_column(String(63), primary_key=True)
    display_name: Mapped[str] = mapped_column(String(255), default="")
    transport: Mapped[str] = mapped_column(String(16))
    url: Mapped[str] = mapped_column(Text, default="")
    command: Mapped[str] = mapped_column(Text, default="")
    args: Mapped[list[str]] = mapped_column(JSON, default=list)
    header_names: Mapped[list[str]] = mapped_column(JSON, default=list)
    env_names: Mapped[list[str]] = mapped_column(JSON, default=list)
    secrets: Mapped[str | None] = mapped_column(LongText, nullable=True)
    timeout_ms: Mapped[int] = mapped_column(Integer)
    tools: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON, nullable=True)
    tools_discover_time: Mapped[datetime | None] = mapped_column(Timestamp, nullable=True)
    approved_tools: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    create_time: Mapped[datetime] = mapped_column(Timestamp)
    update_time: Mapped[datetime] = mapped_column(Timestamp)

    __table_args__ = (Index(None, "create_time", "id"),)


class BudgetReservationRow(Base):
    """The tokens and cost a running turn may still spend, held against its
    tenant's budget from admission until the turn's terminal write (or until
    recovery fails the turn). Keyed by the turn's reply."""

    __tablename__ = "budget_reservations"

    reply_id: Mapped[str] = mapped_column(Uuid, primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64), index=True)
    tokens: Mapped[int] = mapped_column(BigInteger)
    cost_usd: Mapped[Decimal] = mapped_column(Money)
    create_time: Mapped[datetime] = mapped_column(Timestamp)


class RunnerRow(Base):
    """A runner's heartbeat: a live replica updates ``heartbeat_time`` every
    few seconds; the turns of one silent for longer than
    ``AGENTAPI_RUNNER_DEAD_AFTER_S`` are reclaimed by any other replica."""

    __tablename__ = "runners"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    start_time: Mapped[datetime] = mapped_column(Timestamp)
    heartbeat_time: Mapped[datetime] = mapped_column(Timestamp)


class RunEventChunkRow(Base):
    """A run's event log, one row per flush: the events numbered
    ``first_sequence``..``last_sequence``, each a serialized stream event
    framed by a 4-byte big-endian length (server/domain/runs/event_log.py).
    ``terminal`` marks the chunk holding the run's last event. Rows of a
    finished run are deleted by ``agentapi purge`` after
    ``AGENTAPI_EVENT_LOG_RETENTION_S``; the messages stay."""

    __tablename__ = "run_event_chunks"
    __table_args__ = (Index(None, "create_time"),)

    run_id: Mapped[str] = mapped_column(Uuid, primary_key=True)
    first_sequence: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    last_sequence: Mapped[int] = mapped_column(BigInteger)
    terminal: Mapped[int] = mapped_column(Integer, default=0)
    tenant_id: Mapped[str] = mapped_column(String(64))
    payload: Mapped[bytes] = mapped_column(LongBlob)
    create_time: Mapped[datetime] = mapped_column(Timestamp)


class RunCancellationRow(Base):
    """A request to cancel a running turn (CancelTurn), for the replica that
    runs it to find when no Redis carries the signal."""

    __tablename__ = "run_cancellations"
    __table_args__ = (Index(None, "create_time"),)

    run_id: Mapped[str] = mapped_column(Uuid, primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64))
    create_time: Mapped[datetime] = mapped_column(Timestamp)


class ReplyCheckpointRow(Base):
    """The text a streaming reply had at the event log's last flush: recovery
    copies it into the reply it marks INTERRUPTED, and GetMessage shows it
    for a reply streaming on another replica. Kept apart from ``messages``
    (no full-text index to update on every flush); purged with the logs."""

    __tablename__ = "reply_checkpoints"
    __table_args__ = (Index(None, "update_time"),)

    message_id: Mapped[str] = mapped_column(Uuid, primary_key=True)
    content: Mapped[str] = mapped_column(LongText, default="")
    reasoning_content: Mapped[str | None] = mapped_column(LongText, nullable=True)
    update_time: Mapped[datetime] = mapped_column(Timestamp)
