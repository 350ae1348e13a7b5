"""The turn lifecycle: one set of input messages in, one assistant reply out.

1. Validate, load the session and its history, and commit the input messages
   with an IN_PROGRESS assistant message (so a crash leaves a findable row).
2. Build the prompt: the system prompt, the stored history, the new inputs.
3. Stream from the backend (:mod:`.attempts`: retries and fallbacks before the
   first delta); every content or tool-call fragment becomes a numbered delta.
4. End in a stored terminal state whatever happens (:mod:`.terminal`):
   COMPLETED (or REQUIRES_ACTION when the model called tools), FAILED with the
   typed error, or CANCELLED with the partial reply when the caller goes away.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack
from dataclasses import replace
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from server.domain import turn_history
from server.domain.catalog import Catalog
from server.domain.common import Principal, utcnow
from server.domain.errors import AgentAPIError
from server.domain.history import count_message, count_text, count_tools, window
from server.domain.quota import QuotaGuard
from server.domain.retry import RetryPolicy
from server.domain.runs.attempts import FALLBACK_REASONS, attempt_record, open_attempt, retryable
from server.domain.runs.events import Delta, TurnEvent
from server.domain.runs.failures import busy, turn_deadline
from server.domain.runs.messages import InputMessage, in_prompt, new_message, to_openai, validate_inputs
from server.domain.runs.options import TurnOptions, check_tool_choice
from server.domain.runs.reply import ReplyBuilder
from server.domain.runs.terminal import finish, reply_cost
from server.domain.sessions import SessionService, Settings, tool_name
from server.domain.tool_outputs import reconcile
from server.llm.types import ChatBackend, ChatRequest
from server.store.accounts import UsageRepository, tenant_cache
from server.store.db import Database
from server.store.models import MessageRow
from server.store.repositories import MessageRepository

log = logging.getLogger(__name__)

# Tokens kept free for the reply when the turn sets no max_output_tokens.
DEFAULT_OUTPUT_RESERVE = 1024


def merge(settings: Settings, options: TurnOptions) -> Settings:
    """The session's effective settings with the turn's model, tools,
    temperature and max output tokens over them."""
    return replace(
        settings,
        model=options.model or settings.model,
        tools=settings.tools if options.tools is None else options.tools,
        temperature=options.temperature if options.temperature is not None else settings.temperature,
        max_output_tokens=options.max_output_tokens or settings.max_output_tokens,
    )


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
        options: TurnOptions,
        deadline_s: float | None = None,
        inputs_path: str = "messages",
    ) -> AsyncIterator[TurnEvent]:
        """Yields ``started`` (the reply's id and model), the stored inputs,
        the deltas, then the final stored reply.

        ``deadline_s`` is the caller's remaining time in seconds (None: no
        deadline); the turn also stops at the server's maximum turn duration,
        failing with DEADLINE_EXCEEDED (TURN_DEADLINE_EXCEEDED) and its
        partial reply stored.

        Raises before anything is stored: INVALID_ARGUMENT (FIELD_VIOLATION,
        INVALID_SESSION_ID, UNKNOWN_TOOL_CALL_ID, CONTEXT_WINDOW_EXCEEDED when
        the inputs alone do not fit the model), NOT_FOUND (SESSION_NOT_FOUND),
        FAILED_PRECONDITION (SESSION_ENDED, TOOL_OUTPUTS_PENDING,
        TOOL_OUTPUT_CONFLICT), INVALID_ARGUMENT (UNSUPPORTED_PARAMETER) for
        an option the model cannot honour, RESOURCE_EXHAUSTED (BUDGET_EXCEEDED,
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
            history = await turn_history.read(db, view, self.catalog, options)  # bounded: what the window can use
            if any(m.status == "in_progress" for m in history):
                raise busy(view.row.id)
            plan = reconcile(history, inputs, inputs_path)
            if plan.reply is not None:
                yield TurnEvent("started", message=plan.reply)
                for row in plan.repeated:
                    yield TurnEvent("input", message=row)
                yield TurnEvent("final", message=plan.reply)
                return
            settings = merge(view.effective, options)
            check_tool_choice(options, {tool_name(t) for t in settings.tools}, "options")
            self.backend.check(settings.model, options.params)
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
            context = await self._window(history, rows, settings, options.output_reserve)
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
                options=options.stored(),
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
            params=options.params,
            extra_body=options.extra_body,
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
                raise busy(messages[0].session_id) from exc

    async def _window(
        self, history: list[MessageRow], rows: list[MessageRow], settings: Settings, reserve: int | None
    ) -> list[MessageRow]:
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
            + (reserve or settings.max_output_tokens or DEFAULT_OUTPUT_RESERVE)
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
        accumulated = ReplyBuilder()
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

        try:
            async with AsyncExitStack() as exits:
                for index, model in enumerate(models):
                    reply.model = model
                    try:
                        async for attempt in self.policy.retrying(deadline, retryable):
                            with attempt:
                                started = time.monotonic()
                                try:
                                    chunks, head, stream = await open_attempt(
                                        self.backend, self.policy, replace(request, model=model), deadline, exits
                                    )
                                except AgentAPIError as exc:
                                    attempts.append(attempt_record(model, exc.reason, started))
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
                yield TurnEvent("started", message=reply)
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
                            raise turn_deadline() from exc
                    if chunk.has_output:
                        if first_delta_at is None:
                            first_delta_at = time.monotonic()
                        numbered += 1
                        accumulated.add(chunk)
                        yield TurnEvent(
                            "delta",
                            delta=Delta(numbered, chunk.content, chunk.tool_calls, chunk.logprobs, chunk.refusal),
                        )
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
                attempts.append(attempt_record(reply.model, error.reason if error else "", streaming_since))
            reply.status = status or "cancelled"
            reply.content = accumulated.content
            reply.tool_calls = accumulated.tool_calls or None
            reply.logprobs = accumulated.logprobs or None
            reply.refusal = accumulated.refusal
            if usage is not None:
                reply.prompt_tokens, reply.completion_tokens = usage.prompt_tokens, usage.completion_tokens
            elif numbered:
                reply.completion_tokens = count_text(reply.content, reply.model)
            reply.attempts = attempts
            reply.cost_usd = await reply_cost(self.catalog, reply.model, usage, header_cost, reply)
            reply.time_to_first_token_ms = int((first_delta_at - accepted) * 1000) if first_delta_at else 0
            reply.duration_ms = int((time.monotonic() - accepted) * 1000)
            reply.error = {"code": error.code, "reason": error.reason, "message": error.message} if error else None
            reply.token_count = count_message(to_openai(reply), reply.model)
            reply.update_time = utcnow()
            # Shielded: a cancelled caller must not stop the terminal state being stored.
            store_error = await asyncio.shield(finish(self.db, stored, reply))
        if store_error is not None:
            raise store_error
        if not announced:
            yield TurnEvent("started", message=reply)
            for row in inputs:
                yield TurnEvent("input", message=row)
        yield TurnEvent("final", message=reply, error=error)
