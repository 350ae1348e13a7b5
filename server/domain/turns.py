"""The turn lifecycle: one set of input messages in, one assistant reply out.

1. Validate, load the session and its history, and commit the input messages
   with an IN_PROGRESS assistant message (so a crash leaves a findable row).
2. Build the prompt: the system prompt, the stored history, the new inputs.
3. Stream from the backend; every content or tool-call fragment becomes a
   numbered delta.
4. End in a stored terminal state whatever happens: COMPLETED (or
   REQUIRES_ACTION when the model called tools), FAILED with the typed error,
   or CANCELLED with the partial reply when the caller goes away.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from sqlalchemy import update
from sqlalchemy.exc import IntegrityError

from server.domain.catalog import Catalog
from server.domain.common import Principal, new_id, utcnow
from server.domain.errors import AgentAPIError, Violations
from server.domain.quota import QuotaGuard
from server.domain.sessions import SessionService, Settings, validate_settings
from server.llm.offline import estimate_tokens
from server.llm.types import ChatBackend, ChatRequest, TokenUsage, ToolCallFragment
from server.store.accounts import TenantRepository, UsageRepository
from server.store.db import Database
from server.store.models import MessageRow
from server.store.repositories import MessageRepository

log = logging.getLogger(__name__)

INPUT_ROLES = ("user", "tool", "system", "assistant")
# What the terminal update of an assistant message writes.
TERMINAL_COLUMNS = (
    "status", "content", "tool_calls", "finish_reason", "prompt_tokens", "completion_tokens", "cost_usd",
    "time_to_first_token_ms", "duration_ms", "upstream_request_id", "error", "update_time", "model", "attempts",
)  # fmt: skip
# Upstream failures worth trying the next fallback model for (before any delta).
FALLBACK_REASONS = frozenset(
    {"UPSTREAM_RATE_LIMITED", "UPSTREAM_UNAVAILABLE", "UPSTREAM_TIMEOUT", "MODEL_NOT_FOUND", "UPSTREAM_QUOTA_EXCEEDED"}
)
# Replies that never finished are kept in the ledger but not sent back upstream.
_PROMPT_EXCLUDED_STATUSES = ("failed", "in_progress")


@dataclass
class InputMessage:
    """A caller's message; ``role`` is one of user, tool, system, assistant."""

    role: str
    content: str = ""
    tool_call_id: str = ""
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    name: str = ""


@dataclass
class Delta:
    """A numbered fragment of the reply."""

    sequence_number: int
    content: str
    tool_calls: Sequence[ToolCallFragment]


@dataclass
class TurnEvent:
    """``kind`` is ``input`` (a stored input message), ``delta`` or ``final``
    (the stored assistant message, with ``error`` set when the turn failed)."""

    kind: str
    message: MessageRow | None = None
    delta: Delta | None = None
    error: AgentAPIError | None = None


def validate_inputs(inputs: Sequence[InputMessage], options: Settings) -> None:
    """Raises INVALID_ARGUMENT (FIELD_VIOLATION) for no messages, a bad role, an
    empty user message, a tool message without ``tool_call_id``, a last message
    that is not from the user or a tool, or out-of-range options."""
    violations = Violations()
    if not inputs:
        violations.add("messages", "must contain at least one message")
    for index, message in enumerate(inputs):
        path = f"messages[{index}]"
        if message.role not in INPUT_ROLES:
            violations.add(f"{path}.role", "must be user, tool, system or assistant")
        elif message.role in ("user", "system") and not message.content.strip():
            violations.add(f"{path}.content", "must not be empty")
        elif message.role == "tool" and not message.tool_call_id:
            violations.add(f"{path}.tool_call_id", "is required for a tool message")
    if inputs and inputs[-1].role not in ("user", "tool"):
        violations.add(f"messages[{len(inputs) - 1}].role", "the last message must be from the user or a tool")
    validate_settings(options, "options", violations)
    violations.raise_if_any()


def to_openai(row: MessageRow) -> dict[str, Any]:
    """A stored message in OpenAI's chat ``messages`` shape."""
    message: dict[str, Any] = {"role": row.role, "content": row.content}
    if row.tool_calls:
        message["tool_calls"] = row.tool_calls
        message["content"] = row.content or None
    if row.tool_call_id:
        message["tool_call_id"] = row.tool_call_id
    if row.name:
        message["name"] = row.name
    return message


def new_message(session_id: str, tenant_id: str, sequence: int, role: str, now: Any, **fields: Any) -> MessageRow:
    """A new message row with every column set (defaults: completed, empty, zero usage)."""
    values: dict[str, Any] = {
        "content": "",
        "tool_calls": None,
        "tool_call_id": "",
        "name": "",
        "model": "",
        "status": "completed",
        "finish_reason": "",
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "time_to_first_token_ms": 0,
        "duration_ms": 0,
        "upstream_request_id": "",
        "error": None,
        "metadata_": {},
        "cost_usd": 0.0,
    }
    values.update(fields)
    return MessageRow(
        id=new_id(),
        tenant_id=tenant_id,
        session_id=session_id,
        sequence=sequence,
        role=role,
        create_time=now,
        update_time=now,
        **values,
    )


def _attempt(model: str, error_reason: str, started: float) -> dict[str, Any]:
    return {"model": model, "error_reason": error_reason, "duration_ms": int((time.monotonic() - started) * 1000)}


class _Reply:
    """Accumulates content and assembles tool-call fragments by index."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.calls: dict[int, dict[str, Any]] = {}

    def add(self, content: str, fragments: Sequence[ToolCallFragment]) -> None:
        if content:
            self.parts.append(content)
        for fragment in fragments:
            call = self.calls.setdefault(
                fragment.index, {"id": "", "type": "function", "function": {"name": "", "arguments": ""}}
            )
            call["id"] = call["id"] or fragment.id
            call["function"]["name"] += fragment.name
            call["function"]["arguments"] += fragment.arguments

    @property
    def content(self) -> str:
        return "".join(self.parts)

    @property
    def tool_calls(self) -> list[dict[str, Any]]:
        return [self.calls[index] for index in sorted(self.calls)]


class TurnRunner:
    """Runs turns against a chat backend and records them in the database."""

    def __init__(
        self, db: Database, backend: ChatBackend, catalog: Catalog, quota: QuotaGuard, runner_id: str = ""
    ) -> None:
        self.db = db
        self.backend = backend
        self.catalog = catalog
        self.quota = quota
        self.runner_id = runner_id

    async def run(
        self, principal: Principal, session_id: str, inputs: Sequence[InputMessage], options: Settings
    ) -> AsyncIterator[TurnEvent]:
        """Yields the stored inputs, the deltas, then the final stored reply.

        Raises before anything is stored: INVALID_ARGUMENT (FIELD_VIOLATION,
        INVALID_SESSION_ID), NOT_FOUND (SESSION_NOT_FOUND), RESOURCE_EXHAUSTED
        (BUDGET_EXCEEDED, RATE_LIMITED) for the tenant's quotas, ABORTED
        (SESSION_BUSY) when another turn claimed the same sequence numbers.
        Upstream failures do not raise: the final event carries the error.
        """
        accepted = time.monotonic()
        validate_inputs(inputs, options)
        async with self.db.session() as db:
            view = await SessionService.load(db, principal, session_id)
            history = await MessageRepository(db, view.row.id).history()
            tenant = await TenantRepository(db).get(principal.tenant_id)
            if tenant is not None:
                prompt_estimate = sum(estimate_tokens(m.content) for m in history) + sum(
                    estimate_tokens(m.content) for m in inputs
                )
                await self.quota.check_budget(UsageRepository(db), tenant, prompt_estimate)
                await self.quota.admit(tenant)
            sequence = history[-1].sequence if history else 0
            now = utcnow()
            rows = []
            for message in inputs:
                sequence += 1
                rows.append(
                    new_message(
                        view.row.id,
                        principal.tenant_id,
                        sequence,
                        message.role,
                        now,
                        content=message.content,
                        tool_calls=message.tool_calls or None,
                        tool_call_id=message.tool_call_id,
                        name=message.name,
                    )
                )
            settings = view.effective
            settings = replace(
                settings,
                temperature=options.temperature if options.temperature is not None else settings.temperature,
                max_output_tokens=options.max_output_tokens or settings.max_output_tokens,
            )
            reply = new_message(
                view.row.id,
                principal.tenant_id,
                sequence + 1,
                "assistant",
                now,
                model=settings.model,
                status="in_progress",
                runner_id=self.runner_id,
            )
            db.add_all([*rows, reply])
            try:
                await db.commit()
            except IntegrityError as exc:
                raise AgentAPIError(
                    "ABORTED",
                    "SESSION_BUSY",
                    "another turn of this session is running; retry when it ends",
                    {"session_id": view.row.id},
                ) from exc
        for row in rows:
            yield TurnEvent("input", message=row)
        prompt = [
            to_openai(m) for m in history if not (m.role == "assistant" and m.status in _PROMPT_EXCLUDED_STATUSES)
        ]
        prompt += [to_openai(m) for m in rows]
        if settings.system_prompt:
            prompt.insert(0, {"role": "system", "content": settings.system_prompt})
        request = ChatRequest(
            model=settings.model,
            messages=prompt,
            temperature=settings.temperature,
            max_tokens=settings.max_output_tokens,
            tools=settings.tools,
        )
        async for event in self._stream(request, settings.fallback_models, reply, accepted):
            if event.kind == "final" and tenant is not None:
                await self.quota.record_tokens(tenant, reply.prompt_tokens + reply.completion_tokens)
            yield event

    async def _stream(
        self, request: ChatRequest, fallback_models: list[str], reply: MessageRow, accepted: float
    ) -> AsyncIterator[TurnEvent]:
        """Tries the model, then each fallback, moving on only for a retryable
        failure before the first delta; once a delta is out there is no switch."""
        accumulated = _Reply()
        status = ""
        error: AgentAPIError | None = None
        first_delta_at: float | None = None
        numbered = 0
        usage = None
        header_cost = None
        attempts: list[dict[str, Any]] = []
        models = [request.model, *(m for m in fallback_models if m != request.model)]
        try:
            for index, model in enumerate(models):
                attempt_started = time.monotonic()
                reply.model = model
                try:
                    async with self.backend.stream(replace(request, model=model)) as stream:
                        reply.upstream_request_id = stream.request_id or ""
                        header_cost = stream.cost_usd
                        async for chunk in stream:
                            if chunk.content or chunk.tool_calls:
                                if first_delta_at is None:
                                    first_delta_at = time.monotonic()
                                numbered += 1
                                accumulated.add(chunk.content, chunk.tool_calls)
                                yield TurnEvent("delta", delta=Delta(numbered, chunk.content, chunk.tool_calls))
                            if chunk.finish_reason:
                                reply.finish_reason = chunk.finish_reason
                            if chunk.usage is not None:
                                usage = chunk.usage
                except AgentAPIError as exc:
                    attempts.append(_attempt(model, exc.reason, attempt_started))
                    if numbered == 0 and exc.reason in FALLBACK_REASONS and index + 1 < len(models):
                        log.warning(
                            "model %s failed before its first delta (%s); trying %s",
                            model,
                            exc.reason,
                            models[index + 1],
                        )
                        continue
                    raise
                attempts.append(_attempt(model, "", attempt_started))
                break
            status = "requires_action" if accumulated.calls else "completed"
        except AgentAPIError as exc:
            status, error = "failed", exc
        except (asyncio.CancelledError, GeneratorExit):
            status = "cancelled"
            error = AgentAPIError("CANCELLED", "CANCELLED", "the caller cancelled the turn")
            raise
        except Exception as exc:  # an adapter bug must still leave a terminal row
            log.exception("turn failed unexpectedly")
            status, error = "failed", AgentAPIError("INTERNAL", "INTERNAL", "internal error")
            raise AgentAPIError("INTERNAL", "INTERNAL", "internal error") from exc
        finally:
            reply.status = status or "cancelled"
            reply.content = accumulated.content
            reply.tool_calls = accumulated.tool_calls or None
            if usage is not None:
                reply.prompt_tokens, reply.completion_tokens = usage.prompt_tokens, usage.completion_tokens
            elif numbered:
                reply.completion_tokens = estimate_tokens(reply.content)
            reply.attempts = attempts
            reply.cost_usd = await self._cost(reply.model, usage, header_cost, reply)
            reply.time_to_first_token_ms = int((first_delta_at - accepted) * 1000) if first_delta_at else 0
            reply.duration_ms = int((time.monotonic() - accepted) * 1000)
            reply.error = {"code": error.code, "reason": error.reason, "message": error.message} if error else None
            reply.update_time = utcnow()
            # Shielded: a cancelled caller must not stop the terminal state being stored.
            await asyncio.shield(self._store_reply(reply))
        yield TurnEvent("final", message=reply, error=error)

    async def _cost(self, model: str, usage: TokenUsage | None, header_cost: float | None, reply: MessageRow) -> float:
        """The upstream's reported cost (usage block, then header), else the catalog's prices."""
        if usage is not None and usage.cost_usd is not None:
            return usage.cost_usd
        if header_cost is not None:
            return header_cost
        if not reply.prompt_tokens and not reply.completion_tokens:
            return 0.0
        info = await self.catalog.find(model)
        return info.cost(reply.prompt_tokens, reply.completion_tokens) if info else 0.0

    async def _store_reply(self, reply: MessageRow) -> None:
        values = {name: getattr(reply, name) for name in TERMINAL_COLUMNS}
        async with self.db.session() as db:
            await db.execute(update(MessageRow).where(MessageRow.id == reply.id).values(**values))
            await db.commit()
