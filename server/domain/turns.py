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
from contextlib import AsyncExitStack
from dataclasses import dataclass, field, replace
from typing import Any

from sqlalchemy import bindparam, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from server.domain.catalog import Catalog
from server.domain.common import Principal, new_id, utcnow
from server.domain.errors import AgentAPIError, Violations
from server.domain.history import count_message, count_text, count_tools, window
from server.domain.quota import QuotaGuard
from server.domain.retry import RetryPolicy
from server.domain.sessions import SessionService, Settings, validate_settings
from server.domain.tool_outputs import reconcile
from server.llm.types import ChatBackend, ChatChunk, ChatRequest, ChatStream, TokenUsage, ToolCallFragment
from server.store.accounts import UsageRepository, tenant_cache
from server.store.db import Database
from server.store.models import MessageRow
from server.store.repositories import MessageRepository

log = logging.getLogger(__name__)

INPUT_ROLES = ("user", "tool", "system", "assistant")
# What the terminal update of an assistant message writes.
TERMINAL_COLUMNS = (
    "status", "content", "tool_calls", "finish_reason", "prompt_tokens", "completion_tokens", "cost_usd",
    "time_to_first_token_ms", "duration_ms", "upstream_request_id", "error", "update_time", "model", "attempts",
    "token_count",
)  # fmt: skip
_TERMINAL_UPDATE = (
    update(MessageRow.__table__)
    .where(MessageRow.__table__.c.id == bindparam("reply_id"))
    .values({name: bindparam(name) for name in TERMINAL_COLUMNS})
)
# Upstream failures worth another attempt on the same model (before any delta).
RETRY_REASONS = frozenset(
    {
        "UPSTREAM_RATE_LIMITED",
        "UPSTREAM_UNAVAILABLE",
        "UPSTREAM_TIMEOUT",
        "UPSTREAM_PROTOCOL_ERROR",
        "UPSTREAM_EMPTY_COMPLETION",
    }
)
# Failures worth trying the next fallback model for (before any delta): the
# retryable ones, and those that another model may not have.
FALLBACK_REASONS = RETRY_REASONS | {"MODEL_NOT_FOUND", "UPSTREAM_QUOTA_EXCEEDED"}
# Tokens kept free for the reply when the turn sets no max_output_tokens.
DEFAULT_OUTPUT_RESERVE = 1024
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
    # OpenAI content parts ({"type": "text", "text"} or {"type": "image_url", "image_url": {"url"}}).
    content_parts: list[dict[str, Any]] = field(default_factory=list)

    @property
    def text(self) -> str:
        """``content``, or the text parts joined when the content came as parts."""
        if not self.content_parts:
            return self.content
        return "".join(part.get("text", "") for part in self.content_parts if part.get("type") == "text")


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


def validate_inputs(inputs: Sequence[InputMessage], options: Settings, path: str = "messages") -> None:
    """Raises INVALID_ARGUMENT (FIELD_VIOLATION) for no messages, a bad role, an
    empty user message, a tool message without ``tool_call_id``, a last message
    that is not from the user or a tool, or out-of-range options."""
    violations = Violations()
    if not inputs:
        violations.add(path, "must contain at least one message")
    for index, message in enumerate(inputs):
        field_path = f"{path}[{index}]"
        if message.role not in INPUT_ROLES:
            violations.add(f"{field_path}.role", "must be user, tool, system or assistant")
        elif message.role in ("user", "system") and not message.text.strip() and not message.content_parts:
            violations.add(f"{field_path}.content", "must not be empty")
        elif message.role == "tool" and not message.tool_call_id:
            violations.add(f"{field_path}.tool_call_id", "is required for a tool message")
        for part_index, part in enumerate(message.content_parts):
            part_path = f"{field_path}.content_parts[{part_index}]"
            if part.get("type") == "image_url":
                url = str((part.get("image_url") or {}).get("url", ""))
                if not url.startswith(("https://", "http://", "data:")):
                    violations.add(f"{part_path}.image_url", "must be an http(s) or data: URL")
            elif part.get("type") != "text":
                violations.add(f"{part_path}.type", "must be text or image_url")
    if inputs and inputs[-1].role not in ("user", "tool"):
        violations.add(f"{path}[{len(inputs) - 1}].role", "the last message must be from the user or a tool")
    validate_settings(options, "options", violations)
    violations.raise_if_any()


def in_prompt(row: MessageRow) -> bool:
    """Whether a stored message goes back upstream: all but replies that failed or never finished."""
    return not (row.role == "assistant" and row.status in _PROMPT_EXCLUDED_STATUSES)


def to_openai(row: MessageRow) -> dict[str, Any]:
    """A stored message in OpenAI's chat ``messages`` shape."""
    message: dict[str, Any] = {"role": row.role, "content": row.content_parts or row.content}
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
        "content_parts": None,
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
        "attempts": None,
        "token_count": 0,
        "prompt_first_sequence": 0,
        "prompt_last_sequence": 0,
        "runner_id": "",
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


def _busy(session_id: str) -> AgentAPIError:
    return AgentAPIError(
        "ABORTED",
        "SESSION_BUSY",
        "another turn of this session is running; retry when it ends",
        {"session_id": session_id},
    )


def _turn_deadline() -> AgentAPIError:
    return AgentAPIError(
        "DEADLINE_EXCEEDED",
        "TURN_DEADLINE_EXCEEDED",
        "the turn ran out of time (the caller's deadline or the server's maximum turn duration)",
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
        self,
        db: Database,
        backend: ChatBackend,
        catalog: Catalog,
        quota: QuotaGuard,
        runner_id: str = "",
        policy: RetryPolicy | None = None,
        max_turn_duration_s: float = 600.0,
    ) -> None:
        self.db = db
        self.backend = backend
        self.catalog = catalog
        self.quota = quota
        self.runner_id = runner_id
        self.policy = policy or RetryPolicy()
        self.max_turn_duration_s = max_turn_duration_s

    async def run(
        self,
        principal: Principal,
        session_id: str,
        inputs: Sequence[InputMessage],
        options: Settings,
        deadline_s: float | None = None,
        inputs_path: str = "messages",
    ) -> AsyncIterator[TurnEvent]:
        """Yields the stored inputs, the deltas, then the final stored reply.

        ``deadline_s`` is the caller's remaining time in seconds (None: no
        deadline); the turn also stops at the server's maximum turn duration,
        failing with DEADLINE_EXCEEDED (TURN_DEADLINE_EXCEEDED) and its
        partial reply stored.

        Raises before anything is stored: INVALID_ARGUMENT (FIELD_VIOLATION,
        INVALID_SESSION_ID, UNKNOWN_TOOL_CALL_ID, CONTEXT_WINDOW_EXCEEDED when
        the inputs alone do not fit the model), NOT_FOUND (SESSION_NOT_FOUND),
        FAILED_PRECONDITION (SESSION_ENDED, TOOL_OUTPUTS_PENDING,
        TOOL_OUTPUT_CONFLICT), RESOURCE_EXHAUSTED (BUDGET_EXCEEDED,
        RATE_LIMITED) for the tenant's quotas, ABORTED (SESSION_BUSY) while
        another turn of the session runs. Upstream failures do not raise: the
        final event carries the error.
        """
        accepted = time.monotonic()
        budget_s = self.max_turn_duration_s if deadline_s is None else min(self.max_turn_duration_s, deadline_s)
        deadline = accepted + budget_s
        validate_inputs(inputs, options, inputs_path)
        async with AsyncExitStack() as reads:
            db = await reads.enter_async_context(self.db.session())
            view = await SessionService.load(db, principal, session_id, readonly=True)
            if view.row.status == "ended":
                raise AgentAPIError(
                    "FAILED_PRECONDITION",
                    "SESSION_ENDED",
                    "the session has ended; start a new session",
                    {"session_id": view.row.id},
                )
            history = await MessageRepository(db, view.row.id).history()
            if any(m.status == "in_progress" for m in history):
                raise _busy(view.row.id)
            plan = reconcile(history, inputs, inputs_path)
            if plan.reply is not None:
                for row in plan.repeated:
                    yield TurnEvent("input", message=row)
                yield TurnEvent("final", message=plan.reply)
                return
            settings = view.effective
            settings = replace(
                settings,
                temperature=options.temperature if options.temperature is not None else settings.temperature,
                max_output_tokens=options.max_output_tokens or settings.max_output_tokens,
            )
            sequence = history[-1].sequence if history else 0
            now = utcnow()
            rows = []
            for index in plan.new:
                message = inputs[index]
                sequence += 1
                row = new_message(
                    view.row.id,
                    principal.tenant_id,
                    sequence,
                    message.role,
                    now,
                    content=message.text,
                    content_parts=message.content_parts or None,
                    tool_calls=message.tool_calls or None,
                    tool_call_id=message.tool_call_id,
                    name=message.name,
                )
                row.token_count = count_message(to_openai(row), settings.model)
                rows.append(row)
            context = await self._window(history, rows, settings)
            tenant = await tenant_cache(self.db).get(db, principal.tenant_id)
            if tenant is not None:
                prompt_tokens = sum(m.token_count for m in context) + sum(r.token_count for r in rows)
                await self.quota.check_budget(UsageRepository(db), tenant, prompt_tokens)
                await self.quota.admit(tenant)
            reply = new_message(
                view.row.id,
                principal.tenant_id,
                sequence + 1,
                "assistant",
                now,
                model=settings.model,
                status="in_progress",
                runner_id=self.runner_id,
                prompt_first_sequence=(context or rows or [history[-1]])[0].sequence,
                prompt_last_sequence=sequence,
            )
            # The INSERT and COMMIT run beside the upstream request (_stream
            # holds every event back until they are done); the task takes
            # over the database session.
            stored = asyncio.ensure_future(self._store_inputs(reads.pop_all(), db, [*rows, reply]))
            if self.db.local_writer:
                # Nothing to hide behind the upstream request, and a session
                # waiting on SQLite's write lock meanwhile held pool
                # connections under overload (bench itl phase).
                await asyncio.shield(stored)
        prompt = [to_openai(m) for m in context] + [to_openai(m) for m in rows]
        del history, context  # an open stream keeps only what it needs
        if settings.system_prompt:
            prompt.insert(0, {"role": "system", "content": settings.system_prompt})
        request = ChatRequest(
            model=settings.model,
            messages=prompt,
            temperature=settings.temperature,
            max_tokens=settings.max_output_tokens,
            tools=settings.tools,
        )
        events = self._stream(
            request, settings.fallback_models, reply, accepted, deadline, stored, [*plan.repeated, *rows]
        )
        async for event in events:
            if event.kind == "final" and tenant is not None:
                await self.quota.record_tokens(tenant, reply.prompt_tokens + reply.completion_tokens)
            yield event

    @staticmethod
    async def _store_inputs(scope: AsyncExitStack, db: AsyncSession, messages: list[MessageRow]) -> None:
        """INSERTs the turn's new messages and its IN_PROGRESS reply, and
        commits; closes the session (``scope``) however it ends. Raises
        ABORTED (SESSION_BUSY) when another turn took the sequence numbers,
        UNAVAILABLE (DATABASE_UNAVAILABLE)."""
        async with scope:
            try:
                await MessageRepository(db, messages[0].session_id).insert(messages)
                await db.commit()
            except IntegrityError as exc:
                raise _busy(messages[0].session_id) from exc

    async def _window(self, history: list[MessageRow], rows: list[MessageRow], settings: Settings) -> list[MessageRow]:
        """The stored history that goes into the prompt: finished messages, the
        newest whole groups within the history budget (the session's
        ``history_token_budget``, else the model's context window less the
        output reserve, the system prompt, the tools and the new inputs).
        Raises INVALID_ARGUMENT (CONTEXT_WINDOW_EXCEEDED) when the inputs alone
        overflow the context window."""
        usable = [m for m in history if in_prompt(m)]
        if settings.history_token_budget is not None:
            return usable[window(usable, settings.history_token_budget) :]
        info = await self.catalog.find(settings.model)
        if info is None or not info.context_window:
            return usable
        fixed = (
            count_text(settings.system_prompt, settings.model)
            + count_tools(settings.tools, settings.model)
            + sum(r.token_count for r in rows)
            + (settings.max_output_tokens or DEFAULT_OUTPUT_RESERVE)
        )
        budget = info.context_window - fixed
        if budget < 0:
            raise AgentAPIError(
                "INVALID_ARGUMENT",
                "CONTEXT_WINDOW_EXCEEDED",
                f"the new messages need about {fixed} tokens with the output reserve; "
                f"model {settings.model!r} takes {info.context_window}",
                {"model": settings.model, "context_window": str(info.context_window)},
            )
        return usable[window(usable, budget) :]

    async def _open(
        self, request: ChatRequest, deadline: float, exits: AsyncExitStack
    ) -> tuple[AsyncIterator[ChatChunk], list[ChatChunk], ChatStream]:
        """Opens a stream and reads it up to its first content or tool-call
        chunk, within the attempt timeout. Returns the rest of the stream, the
        chunks read, and the stream. Raises DEADLINE_EXCEEDED (UPSTREAM_TIMEOUT,
        TURN_DEADLINE_EXCEEDED) or UNAVAILABLE (UPSTREAM_EMPTY_COMPLETION)."""
        attempt_deadline = min(deadline, time.monotonic() + self.policy.attempt_timeout_s)
        head: list[ChatChunk] = []
        # The attempt's own exit stack: a failed attempt closes its upstream
        # request now, not when the whole turn ends; a good one hands it on.
        attempt = AsyncExitStack()
        try:
            async with asyncio.timeout(attempt_deadline - time.monotonic()):
                stream = await attempt.enter_async_context(self.backend.stream(request))
                chunks = aiter(stream)
                async for chunk in chunks:
                    head.append(chunk)
                    if chunk.content or chunk.tool_calls:
                        exits.push_async_exit(attempt.pop_all())
                        return chunks, head, stream
        except TimeoutError as exc:
            await attempt.aclose()
            if attempt_deadline >= deadline:
                raise _turn_deadline() from exc
            raise AgentAPIError(
                "DEADLINE_EXCEEDED",
                "UPSTREAM_TIMEOUT",
                f"model {request.model!r} sent nothing for {self.policy.attempt_timeout_s:g} s",
                {"model": request.model},
            ) from exc
        except BaseException:
            await attempt.aclose()
            raise
        await attempt.aclose()
        raise AgentAPIError(
            "UNAVAILABLE",
            "UPSTREAM_EMPTY_COMPLETION",
            f"model {request.model!r} ended its reply without content or tool calls",
            {"model": request.model, "finish_reason": next((c.finish_reason for c in head if c.finish_reason), "")},
        )

    async def _stream(
        self,
        request: ChatRequest,
        fallback_models: list[str],
        reply: MessageRow,
        accepted: float,
        deadline: float,
        stored: asyncio.Future[None],
        inputs: list[Any],
    ) -> AsyncIterator[TurnEvent]:
        """Tries the model, then each fallback. Each model gets the policy's
        attempts, with backoff, for a retryable failure before the first delta;
        once a delta is out there is no retry and no switch.

        ``stored`` is the commit of the turn's messages, running meanwhile:
        nothing (``inputs``' events first) is yielded before it succeeds; when
        it fails, its error is raised and nothing else is stored."""
        accumulated = _Reply()
        announced = False
        store_error: AgentAPIError | None = None
        status = ""
        error: AgentAPIError | None = None
        first_delta_at: float | None = None
        numbered = 0
        usage = None
        header_cost = None
        attempts: list[dict[str, Any]] = []
        streaming_since: float | None = None
        models = [request.model, *(m for m in fallback_models if m != request.model)]

        def retryable(exc: BaseException) -> bool:
            return isinstance(exc, AgentAPIError) and exc.reason in RETRY_REASONS

        try:
            async with AsyncExitStack() as exits:
                for index, model in enumerate(models):
                    reply.model = model
                    try:
                        async for attempt in self.policy.retrying(deadline, retryable):
                            with attempt:
                                started = time.monotonic()
                                try:
                                    chunks, head, stream = await self._open(
                                        replace(request, model=model), deadline, exits
                                    )
                                except AgentAPIError as exc:
                                    attempts.append(_attempt(model, exc.reason, started))
                                    raise
                        break
                    except AgentAPIError as exc:
                        if exc.reason in FALLBACK_REASONS and index + 1 < len(models) and time.monotonic() < deadline:
                            log.warning("model %s failed (%s); trying %s", model, exc.reason, models[index + 1])
                            continue
                        raise
                streaming_since = started
                # The durable write went on while the upstream answered; the
                # caller sees nothing until it is done.
                await stored
                for row in inputs:
                    yield TurnEvent("input", message=row)
                announced = True
                reply.upstream_request_id = stream.request_id or ""
                header_cost = stream.cost_usd
                pending = iter(head)
                while True:
                    chunk = next(pending, None)
                    if chunk is None:
                        try:
                            async with asyncio.timeout(deadline - time.monotonic()):
                                chunk = await anext(chunks)
                        except StopAsyncIteration:
                            break
                        except TimeoutError as exc:
                            raise _turn_deadline() from exc
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
            if streaming_since is not None:  # the attempt that streamed, however it ended
                attempts.append(_attempt(reply.model, error.reason if error else "", streaming_since))
            reply.status = status or "cancelled"
            reply.content = accumulated.content
            reply.tool_calls = accumulated.tool_calls or None
            if usage is not None:
                reply.prompt_tokens, reply.completion_tokens = usage.prompt_tokens, usage.completion_tokens
            elif numbered:
                reply.completion_tokens = count_text(reply.content, reply.model)
            reply.attempts = attempts
            reply.cost_usd = await self._cost(reply.model, usage, header_cost, reply)
            reply.time_to_first_token_ms = int((first_delta_at - accepted) * 1000) if first_delta_at else 0
            reply.duration_ms = int((time.monotonic() - accepted) * 1000)
            reply.error = {"code": error.code, "reason": error.reason, "message": error.message} if error else None
            reply.token_count = count_message(to_openai(reply), reply.model)
            reply.update_time = utcnow()
            # Shielded: a cancelled caller must not stop the terminal state being stored.
            store_error = await asyncio.shield(self._finish(stored, reply))
        if store_error is not None:
            raise store_error
        if not announced:
            for row in inputs:
                yield TurnEvent("input", message=row)
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

    async def _finish(self, stored: asyncio.Future[None], reply: MessageRow) -> AgentAPIError | None:
        """Waits for the turn's first commit, then stores the reply's terminal
        state; returns the first commit's error instead (then there is no
        reply row to update)."""
        try:
            await stored
        except AgentAPIError as exc:
            return exc
        await self._store_reply(reply)
        return None

    async def _store_reply(self, reply: MessageRow) -> None:
        values = {name: getattr(reply, name) for name in TERMINAL_COLUMNS}
        async with self.db.session() as db:
            # A plain Core UPDATE with bound parameters: the ORM-enabled form
            # costs about a millisecond more per turn (bench/turncost.py).
            connection = await db.connection()
            await connection.execute(_TERMINAL_UPDATE, {"reply_id": reply.id, **values})
            await db.commit()
