"""One model step of a run: try the model and its fallbacks, relay the
deltas, and store the step's reply in its terminal state whatever happens.

Retries and fallbacks happen only before the step's first delta. Deltas are
numbered across the whole run. Fragments of calls to server tools are not
relayed as deltas: those calls appear as ``tool_started`` events when they
run, so a caller sees the model's text and the calls it must answer itself.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field, replace
from typing import Any

from server.domain.catalog import Catalog
from server.domain.common import utcnow
from server.domain.errors import AgentAPIError
from server.domain.history import count_message, count_text
from server.domain.retry import RetryPolicy
from server.domain.runs.attempts import FALLBACK_REASONS, attempt_record, open_attempt, retryable
from server.domain.runs.events import Delta, TurnEvent
from server.domain.runs.failures import stop_reason, turn_deadline
from server.domain.runs.messages import to_openai
from server.domain.runs.reply import ReplyBuilder
from server.domain.runs.routing import join_reasoning
from server.domain.runs.terminal import finish, reply_cost
from server.domain.runs.tool_calls import server_calls, tool_rows
from server.domain.runs.toolset import CLIENT, Toolset
from server.llm.types import ChatBackend, ChatRequest, ToolCallFragment
from server.observability import runs as observed
from server.observability import tracing
from server.store.db import Database
from server.store.models import MessageRow

log = logging.getLogger(__name__)


@dataclass
class RunState:
    """What the steps of one run share."""

    db: Database
    backend: ChatBackend
    catalog: Catalog
    policy: RetryPolicy
    toolset: Toolset
    accepted: float
    deadline: float
    fallback_models: list[str] = field(default_factory=list)
    max_steps: int = 8
    numbered: int = 0  # deltas relayed so far, across the run's steps
    started: bool = False  # whether ``started`` (the run's first event) is out
    tokens_used: int = 0  # prompt and completion tokens of the run's steps so far
    open_claim: MessageRow | None = None  # a step whose claim its server tool calls still hold
    # A reply stored IN_PROGRESS whose end no step has stored yet, with its
    # insert: the run stores it CANCELLED or FAILED if it stops before a step does.
    unfinished: tuple[MessageRow, asyncio.Future[None]] | None = None
    runner_id: str = ""
    tenant: Any = None  # the tenant's row, for the checks before each later step (None: no quotas)
    routing: Any = None  # the turn's Routing (server/domain/runs/routing.py); None until auto decides
    router_model: str = ""  # the classifier's model for auto (AGENTAPI_ROUTER_MODEL, else the turn's)


def max_steps_exceeded(max_steps: int) -> AgentAPIError:
    """FAILED_PRECONDITION (MAX_STEPS_EXCEEDED)."""
    return AgentAPIError(
        "FAILED_PRECONDITION",
        "MAX_STEPS_EXCEEDED",
        f"the model still called tools after {max_steps} steps (the agent's max_steps)",
        {"max_steps": str(max_steps)},
    )


def settle_calls(calls: list[dict[str, Any]], toolset: Toolset) -> tuple[str, bool]:
    """Marks each call with its ``executor`` and, for server calls that need a
    person first, ``awaiting_approval``. Returns (status, runs_server_tools):
    ``requires_action`` when any call needs the caller (a client call or an
    approval), else ``completed``."""
    needs_caller = False
    for call in calls:
        name = str((call.get("function") or {}).get("name", ""))
        call["executor"] = toolset.executor_of(name)
        tool = toolset.server.get(name)
        if tool is None:
            needs_caller = True
        elif tool.needs_approval:
            call["awaiting_approval"] = True
            needs_caller = True
    runs_server_tools = any(call["executor"] != CLIENT for call in calls)
    return ("requires_action" if needs_caller else "completed"), runs_server_tools


class _Relay:
    """Which tool-call fragments reach the caller: those of client calls."""

    def __init__(self, toolset: Toolset) -> None:
        self.toolset = toolset
        self.executors: dict[int, str] = {}

    def client_fragments(self, fragments: Sequence[ToolCallFragment]) -> tuple[ToolCallFragment, ...]:
        if not self.toolset.server:
            return tuple(fragments)
        kept = []
        for fragment in fragments:
            if fragment.name and fragment.index not in self.executors:
                self.executors[fragment.index] = self.toolset.executor_of(fragment.name)
            if self.executors.get(fragment.index, CLIENT) == CLIENT:
                kept.append(fragment)
        return tuple(kept)


async def model_step(
    state: RunState,
    request: ChatRequest,
    reply: MessageRow,
    stored: asyncio.Future[None],
    inputs: Sequence[Any],
    step: int,
) -> AsyncIterator[TurnEvent]:
    """Runs one step and yields its events, ending with ``final`` (the step's
    stored reply, and its error when it failed).

    ``stored`` is the commit of the step's rows (the inputs and the reply for
    step 1), running meanwhile: nothing is yielded before it succeeds (the
    run's ``started`` event and ``inputs`` come first); when it fails, its
    error is raised and nothing else is stored. Upstream failures do not
    raise: the final event carries them.
    """
    accumulated = ReplyBuilder()
    relay = _Relay(state.toolset)
    began = state.accepted if step == 1 else time.monotonic()
    deadline = state.deadline
    announced = False
    store_error: AgentAPIError | None = None
    status = ""
    error: AgentAPIError | None = None
    first_delta_at: float | None = None
    relayed = 0
    usage = None
    header_cost = None
    attempts: list[dict[str, Any]] = []
    streaming_since: float | None = None
    runs_server_tools = False
    models = [request.model, *(m for m in state.fallback_models if m != request.model)]
    state.unfinished = None  # this step stores its reply's end, whatever happens
    run = observed.current()

    async def announce() -> AsyncIterator[TurnEvent]:
        if not state.started:
            state.started = True
            yield TurnEvent("started", message=reply)
        for row in inputs:
            yield TurnEvent("input", message=row)

    try:
        async with AsyncExitStack() as exits:
            for index, model in enumerate(models):
                reply.model = model
                try:
                    async for attempt in state.policy.retrying(deadline, retryable):
                        with attempt:
                            started = time.monotonic()
                            number = attempt.retry_state.attempt_number
                            span = run.attempt_started(model, number, index > 0, request)
                            try:
                                with tracing.current(span):  # the upstream request carries its traceparent
                                    chunks, head, stream = await open_attempt(
                                        state.backend, state.policy, replace(request, model=model), deadline, exits
                                    )
                            except AgentAPIError as exc:
                                attempts.append(attempt_record(model, exc.reason, started))
                                run.attempt_failed(span, model, exc.reason)
                                raise
                    break
                except AgentAPIError as exc:
                    if exc.reason in FALLBACK_REASONS and index + 1 < len(models) and time.monotonic() < deadline:
                        run.fallback(model, exc.reason)
                        log.warning("model %s failed (%s); trying %s", model, exc.reason, models[index + 1])
                        continue
                    raise
            streaming_since = started
            # The durable write went on while the upstream answered; the
            # caller sees nothing until it is done.
            await asyncio.shield(stored)
            async for event in announce():
                yield event
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
                    relayed += 1
                    accumulated.add(chunk)
                    fragments = relay.client_fragments(chunk.tool_calls)
                    if chunk.content or fragments or chunk.refusal or chunk.reasoning:
                        state.numbered += 1
                        delta = Delta(
                            state.numbered, chunk.content, fragments, chunk.logprobs, chunk.refusal, chunk.reasoning
                        )
                        yield TurnEvent("delta", message=reply, delta=delta)
                if chunk.finish_reason:
                    reply.finish_reason = chunk.finish_reason
                if chunk.usage is not None:
                    usage = chunk.usage
        calls = accumulated.tool_calls
        status, runs_server_tools = settle_calls(calls, state.toolset)
        if runs_server_tools and status == "completed" and step >= state.max_steps:
            raise max_steps_exceeded(state.max_steps)
    except AgentAPIError as exc:
        status, error = "failed", exc
    except (asyncio.CancelledError, GeneratorExit) as exc:
        error = stop_reason(exc, deadline)
        # A deadline ends the turn FAILED whichever timer fired first, gRPC's or ours.
        status = "failed" if error.reason == "TURN_DEADLINE_EXCEEDED" else "cancelled"
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
        # The session stays claimed while this step's server tool calls run,
        # and their rows are stored IN_PROGRESS with the step's end, so a run
        # that dies between the two leaves a row recovery finds.
        reply.continues = error is None and runs_server_tools
        calls = server_calls(reply, state.toolset) if reply.continues else []
        reply.tool_rows = tool_rows(reply, calls, step, state.runner_id) if calls else []
        reply.logprobs = accumulated.logprobs or None
        reply.refusal = accumulated.refusal
        reply.reasoning_content = join_reasoning(reply.reasoning_content, accumulated.reasoning)
        reply.thinking_blocks = accumulated.thinking_blocks
        if usage is not None:
            reply.prompt_tokens += usage.prompt_tokens
            reply.completion_tokens += usage.completion_tokens
            reply.reasoning_tokens += usage.reasoning_tokens
        elif relayed:
            reply.completion_tokens += count_text(reply.content, reply.model)
        reply.attempts = attempts
        state.tokens_used += reply.prompt_tokens + reply.completion_tokens
        reply.cost_usd = await reply_cost(state.catalog, reply.model, usage, header_cost, reply)
        if (usage is not None and usage.cost_usd is not None) or header_cost is not None:
            # The upstream priced this step's call alone: add what routing's calls cost.
            reply.cost_usd += getattr(reply, "carried_cost", 0)
        reply.time_to_first_token_ms = int((first_delta_at - began) * 1000) if first_delta_at else 0
        reply.duration_ms = int((time.monotonic() - began) * 1000)
        reply.error = {"code": error.code, "reason": error.reason, "message": error.message} if error else None
        reply.token_count = count_message(to_openai(reply), reply.model)
        reply.update_time = utcnow()
        run.step_ended(reply, step, None if first_delta_at is None else first_delta_at - began)
        # Shielded: a cancelled caller must not stop the terminal state being stored.
        store_error = await asyncio.shield(finish(state.db, stored, reply))
    if store_error is not None:
        raise store_error
    if not announced:
        async for event in announce():
            yield event
    yield TurnEvent("final", message=reply, error=error)
