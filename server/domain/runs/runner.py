"""The run lifecycle: input messages in, a run of steps, one final reply out.

1. Validate, load the session and its history, and commit the input messages
   with an IN_PROGRESS assistant message (so a crash leaves a findable row).
2. Build the prompt: the system prompt, the stored history, the new inputs,
   and the run's tools (:mod:`.toolset`: client, built-in and MCP).
3. A model step (:mod:`.step`; retries and fallbacks before its first delta
   in :mod:`.attempts`); every content or client tool-call fragment becomes a
   delta, numbered across the run.
4. When the step called server tools, run them (:mod:`.tool_calls`), store
   each result as a tool message, and take another step; stop when the model
   answers, needs the caller (a client tool, an approval), fails, or reaches
   the agent's ``max_steps``.
5. Every step ends in a stored terminal state whatever happens
   (:mod:`.terminal`): COMPLETED, REQUIRES_ACTION, FAILED with the typed
   error, or CANCELLED with the partial reply when the caller goes away.
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
from server.domain.agents import DEFAULT_MAX_STEPS
from server.domain.catalog import Catalog
from server.domain.common import Principal, utcnow
from server.domain.errors import AgentAPIError
from server.domain.history import count_message
from server.domain.idempotency import current_key
from server.domain.quota import QuotaGuard
from server.domain.retry import RetryPolicy
from server.domain.runs.admission import admit, interrupted_input
from server.domain.runs.approvals import Approval, Decisions, decide, decision_rows
from server.domain.runs.events import TurnEvent
from server.domain.runs.failures import busy, stop_reason
from server.domain.runs.messages import InputMessage, new_message, to_openai, validate_inputs
from server.domain.runs.options import TurnOptions, check_tool_choice
from server.domain.runs.regenerate import latest_run, supersede
from server.domain.runs.routing import Routed, Routing, forced_passthrough, requested_mode, route
from server.domain.runs.step import RunState, model_step
from server.domain.runs.terminal import finish, insert_messages, release_run
from server.domain.runs.tool_calls import run_calls, server_calls
from server.domain.runs.toolset import McpTools, build_toolset
from server.domain.runs.window import merge, prompt_window
from server.domain.sessions import SessionService, tool_name
from server.domain.tool_outputs import Reconciled, reconcile, reply_after
from server.llm.types import ChatBackend, ChatRequest
from server.observability import runs as observed
from server.store.accounts import tenant_cache
from server.store.db import Database
from server.store.models import MessageRow
from server.store.repositories import MessageRepository
from server.tools.builtin import BuiltinRegistry
from server.tools.execution import DEFAULT_MAX_OUTPUT_BYTES, DEFAULT_TIMEOUT_S

log = logging.getLogger(__name__)


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
        registry: BuiltinRegistry | None = None,
        mcp: McpTools | None = None,
        tool_bounds: tuple[float, int] = (DEFAULT_TIMEOUT_S, DEFAULT_MAX_OUTPUT_BYTES),
        router_model: str = "",
    ) -> None:
        self.db = db
        self.backend = backend
        self.catalog = catalog
        self.quota = quota
        self.runner_id = runner_id
        self.policy = policy or RetryPolicy()
        self.max_turn_duration_s = max_turn_duration_s
        self.registry = registry or BuiltinRegistry()
        self.mcp = mcp
        self.tool_timeout_s, self.tool_max_output_bytes = tool_bounds
        self.router_model = router_model

    async def run(
        self,
        principal: Principal,
        session_id: str,
        inputs: Sequence[InputMessage],
        options: TurnOptions,
        deadline_s: float | None = None,
        inputs_path: str = "messages",
        approvals: Sequence[Approval] = (),
        regenerate: str | None = None,
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
        TOOL_OUTPUT_CONFLICT, APPROVAL_CONFLICT), INVALID_ARGUMENT (UNSUPPORTED_PARAMETER) for
        an option the model cannot honour, RESOURCE_EXHAUSTED (BUDGET_EXCEEDED,
        RATE_LIMITED) for the tenant's quotas, ABORTED (SESSION_BUSY) while
        another turn of the session runs. Upstream failures do not raise: the
        final event carries the error.
        """
        accepted = time.monotonic()
        budget_s = self.max_turn_duration_s if deadline_s is None else min(self.max_turn_duration_s, deadline_s)
        deadline = accepted + budget_s
        validate_inputs(inputs, options, inputs_path, allow_empty=bool(approvals) or regenerate is not None)
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
            key = current_key()
            superseded: list[Any] = []
            top = history[-1].sequence if history else 0  # superseded rows keep their sequence numbers
            if regenerate is not None:  # the latest turn again, on its stored inputs
                superseded = latest_run(history, regenerate)
                history = [m for m in history if m not in superseded]
            retried = interrupted_input(history, inputs, key)
            decisions = decide(history, approvals) if approvals else Decisions()
            # A retry of an interrupted turn answers its stored input, stored once.
            fresh = retried is not None or regenerate is not None
            plan = Reconciled() if fresh else reconcile(history, inputs, inputs_path, decisions.decided)
            if not fresh and not plan.new and not (decisions.approved or decisions.denied) and not plan.reply:
                plan.reply = reply_after(history, [*plan.repeated, *decisions.repeated])
            if plan.reply is not None:
                yield TurnEvent("started", message=plan.reply, replay=True)
                for row in plan.repeated:
                    yield TurnEvent("input", message=row)
                yield TurnEvent("final", message=plan.reply)
                return
            settings = merge(view.effective, options)
            toolset = await build_toolset(settings.tools, view.agent, settings.allowed_tools, self.registry, self.mcp)
            check_tool_choice(options, {tool_name(t) for t in toolset.openai}, "options")
            self.backend.check(settings.model, options.params)
            mode = requested_mode(options.routing_mode, view.agent.routing_mode if view.agent else None)
            routing = forced_passthrough(mode, options.params, toolset.client_tools)
            if routing is None and mode != "auto":
                routing = Routing(mode, mode, "requested")
            sequence = top
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
            new_rows = rows
            if retried is not None:
                # The stored input, and the history before it (without the interrupted replies).
                history, rows = [m for m in history if m.sequence < retried[0].sequence], retried
            approved_rows, denied_rows = decision_rows(
                decisions, view.row.id, principal.tenant_id, sequence + 1, self.runner_id
            )
            for row in (*approved_rows, *denied_rows):
                row.token_count = count_message(to_openai(row), settings.model)
            sequence += len(approved_rows) + len(denied_rows)
            rows_in_prompt = [*rows, *denied_rows]
            context = await prompt_window(self.catalog, history, rows_in_prompt, settings, options.output_reserve)
            tenant = await tenant_cache(self.db).get(db, principal.tenant_id)
            reply = new_message(
                view.row.id,
                principal.tenant_id,
                sequence + 1,
                "assistant",
                now,
                model=settings.model,
                status="in_progress",
                runner_id=self.runner_id,
                prompt_first_sequence=(context or rows or approved_rows or denied_rows or [history[-1]])[0].sequence,
                prompt_last_sequence=rows[-1].sequence if retried is not None else sequence,
                options=options.stored(),
                step=1,
                routing=routing.stored() if routing else None,
                idempotency_key=key,
            )
            prompt_tokens = sum(m.token_count for m in context) + sum(r.token_count for r in rows_in_prompt)
            reservation = await admit(
                self.db, db, self.quota, self.catalog, tenant, reply, prompt_tokens, settings.max_output_tokens
            )
            reply.reserved = reservation is not None  # the run's last terminal write drops it (terminal.py)
            reply.run_reply_id = reply.id  # the id the run's claim and reservation are held under
            # The INSERT and COMMIT run beside the upstream request (_stream
            # holds every event back until they are done); the task takes
            # over the database session.
            stored = asyncio.ensure_future(
                self._store_inputs(reads.pop_all(), db, [*new_rows, *approved_rows, *denied_rows, reply], superseded)
            )
        prompt = [to_openai(m) for m in context] + [to_openai(m) for m in rows_in_prompt]
        del history, context  # an open stream keeps only what it needs
        if settings.system_prompt:
            prompt.insert(0, {"role": "system", "content": settings.system_prompt})
        request = ChatRequest(
            model=settings.model,
            messages=prompt,
            temperature=settings.temperature,
            max_tokens=settings.max_output_tokens,
            tools=toolset.openai,
            params=options.params,
            extra_body=options.extra_body,
        )
        state = RunState(
            self.db,
            self.backend,
            self.catalog,
            self.policy,
            toolset,
            accepted,
            deadline,
            settings.fallback_models,
            (view.agent.max_steps if view.agent else None) or DEFAULT_MAX_STEPS,
            tenant=tenant,
            runner_id=self.runner_id,
            routing=routing,
            router_model=self.router_model,
        )
        approved = (decisions.approved, approved_rows, denied_rows)
        events = self._steps(state, request, reply, stored, [*plan.repeated, *rows], approved)
        agent_key = view.agent.key if view.agent else ""
        run = observed.begin_run(
            principal.tenant_id, view.row.id, agent_key, view.row.conversation_id, settings.model, self.backend
        )
        try:
            async for event in events:
                yield event
        finally:  # a cancelled run's tokens count against the per-minute limit too
            run.end()
            if tenant is not None:
                await asyncio.shield(self._record_tokens(tenant, state.tokens_used))

    async def _record_tokens(self, tenant: Any, tokens: int) -> None:
        """Counts the run's tokens against ``tokens_per_minute``; best effort: the
        run is stored and billed, so a limiter outage must not turn it into an error."""
        try:
            await self.quota.record_tokens(tenant, tokens)
        except Exception:
            log.warning("the run's tokens were not counted: the rate limiter failed", exc_info=True)

    @staticmethod
    async def _store_inputs(
        scope: AsyncExitStack, db: AsyncSession, messages: list[MessageRow], superseded: Sequence[Any] = ()
    ) -> None:
        """INSERTs the turn's new messages and its IN_PROGRESS reply (and marks
        a regenerated turn's old messages superseded by it), and commits;
        closes the session (``scope``) however it ends. Raises ABORTED
        (SESSION_BUSY) when another turn took the sequence numbers,
        UNAVAILABLE (DATABASE_UNAVAILABLE)."""
        async with scope:
            try:
                await supersede(db, superseded, messages[-1].id)
                await MessageRepository(db, messages[0].session_id).insert(messages)
                await db.commit()
            except IntegrityError as exc:
                raise busy(messages[0].session_id) from exc

    async def _steps(
        self,
        state: RunState,
        request: ChatRequest,
        reply: MessageRow,
        stored: asyncio.Future[None],
        inputs: list[Any],
        approved: tuple[list[dict[str, Any]], list[MessageRow], list[MessageRow]] = ([], [], []),
    ) -> AsyncIterator[TurnEvent]:
        """The run's steps: the calls a person approved (``approved``: the
        calls, their IN_PROGRESS rows, and the rows of denied calls), then a
        model step; when it called server tools (and nothing needs the
        caller), their calls, then the next model step with their results,
        until the model answers, needs the caller, fails or reaches
        ``max_steps``. Yields every event; the last is ``final``."""
        state.unfinished = (reply, stored)
        try:
            async for event in self._phases(state, request, reply, stored, inputs, approved):
                yield event
        except BaseException as exc:
            if state.unfinished is not None:  # stopped before a step could store its reply's end
                await asyncio.shield(self._abandon(state, exc))
            raise
        finally:
            if state.open_claim is not None:  # the run ended while its server calls held the session
                await asyncio.shield(release_run(self.db, state.open_claim))

    async def _abandon(self, state: RunState, exc: BaseException) -> None:
        """Stores the terminal state of a reply no step finished (the run was
        cancelled or failed in routing, approvals or between steps), which
        frees the session and the run's reservation."""
        reply, stored = state.unfinished  # type: ignore[misc]
        state.unfinished = None
        if isinstance(exc, AgentAPIError):
            error, status = exc, "failed"
        elif isinstance(exc, (asyncio.CancelledError, GeneratorExit)):
            error = stop_reason(exc, state.deadline)
            status = "failed" if error.reason == "TURN_DEADLINE_EXCEEDED" else "cancelled"
        else:
            error, status = AgentAPIError("INTERNAL", "INTERNAL", "internal error"), "failed"
        reply.status, reply.continues = status, False
        reply.error = {"code": error.code, "reason": error.reason, "message": error.message}
        reply.update_time = utcnow()
        state.open_claim = None  # the terminal write below releases the run
        await finish(self.db, stored, reply)

    async def _phases(
        self,
        state: RunState,
        request: ChatRequest,
        reply: MessageRow,
        stored: asyncio.Future[None],
        inputs: list[Any],
        approved: tuple[list[dict[str, Any]], list[MessageRow], list[MessageRow]],
    ) -> AsyncIterator[TurnEvent]:
        if self.db.local_writer:
            # SQLite commits before the upstream request: nothing to hide
            # behind it, and a session waiting on the one write lock meanwhile
            # held pool connections under overload (bench itl phase).
            await asyncio.shield(stored)
        calls, approved_rows, denied_rows = approved
        if approved_rows or denied_rows:
            await asyncio.shield(stored)
            state.started = True
            yield TurnEvent("started", message=reply)
            for row in inputs:
                yield TurnEvent("input", message=row)
            inputs = []
            for row in denied_rows:
                yield TurnEvent("tool_completed", message=row)
            if approved_rows:
                bounds = (self.tool_timeout_s, self.tool_max_output_bytes)
                async for event in run_calls(
                    self.db, state.toolset, calls, approved_rows, state.deadline, *bounds, inserted=True
                ):
                    yield event
                request = replace(request, messages=[*request.messages, *(to_openai(r) for r in approved_rows)])
        if state.routing is None or state.routing.mode == "reasoning":
            routed = Routed(request)
            async for event in route(state, request, reply, stored, inputs, routed):
                yield event
            request, inputs = routed.request, [] if routed.announced else inputs
        async for event in self._model_and_tool_steps(state, request, reply, stored, inputs):
            yield event

    async def _refused_step(self, state: RunState, first: MessageRow) -> AgentAPIError | None:
        """Why the run may not take another model step (the tenant's rate
        limits or budget), or None."""
        if state.tenant is None:
            return None
        try:
            await self.quota.check_step(self.db, state.tenant, first.id)
        except AgentAPIError as exc:
            if exc.code != "RESOURCE_EXHAUSTED":
                raise
            return exc
        except Exception:  # the limiter's store (Redis) is down: the step goes ahead
            log.warning("rate limits not checked before a step: the limiter failed", exc_info=True)
        return None

    async def _model_and_tool_steps(
        self,
        state: RunState,
        request: ChatRequest,
        reply: MessageRow,
        stored: asyncio.Future[None],
        inputs: list[Any],
    ) -> AsyncIterator[TurnEvent]:
        step = 1
        first = reply
        while True:
            final = None
            async for event in model_step(state, request, reply, stored, inputs if step == 1 else (), step):
                if event.kind == "final":
                    final = event
                    break
                yield event
            assert final is not None
            state.open_claim = reply if getattr(reply, "continues", False) else None
            calls = server_calls(reply, state.toolset) if final.error is None else []
            if calls:
                # Also when the caller must answer other calls of the step
                # (REQUIRES_ACTION): the server's own calls are run first.
                # Their rows were stored IN_PROGRESS with the step's end.
                rows = reply.tool_rows
                bounds = (self.tool_timeout_s, self.tool_max_output_bytes)
                async for event in run_calls(
                    self.db, state.toolset, calls, rows, state.deadline, *bounds, inserted=True
                ):
                    yield event
            if not calls or reply.status != "completed":
                if state.open_claim is not None:  # free the session before the caller can answer
                    await asyncio.shield(release_run(self.db, state.open_claim))
                    state.open_claim = None
                yield final
                return
            step += 1
            refused = await self._refused_step(state, first)
            prompt = [*request.messages, to_openai(reply), *(to_openai(row) for row in rows)]
            reply = new_message(
                reply.session_id,
                reply.tenant_id,
                rows[-1].sequence + 1,
                "assistant",
                utcnow(),
                model=request.model,
                status="in_progress",
                runner_id=self.runner_id,
                prompt_first_sequence=reply.prompt_first_sequence,
                prompt_last_sequence=rows[-1].sequence,
                options=reply.options,
                step=step,
                idempotency_key=reply.idempotency_key,
            )
            reply.reserved, reply.run_reply_id = first.reserved, first.id
            request = replace(request, messages=prompt)
            stored = asyncio.ensure_future(insert_messages(self.db, [reply]))
            state.unfinished = (reply, stored)
            await asyncio.shield(stored)
            if refused is not None:
                state.unfinished = None
                reply.status, reply.continues = "failed", False
                reply.error = {"code": refused.code, "reason": refused.reason, "message": refused.message}
                state.open_claim = None  # this terminal write releases the run
                await asyncio.shield(finish(self.db, stored, reply))
                yield TurnEvent("final", message=reply, error=refused)
                return
