"""Routing a turn (the seed's "Reasoning Agent API"): ``passthrough`` calls
the model directly; ``reasoning`` first asks it for a short plan, streamed as
reasoning and stored, then acts with the plan in context; ``auto`` lets one
small classifier call choose between the two; ``orchestration`` is not built.

A turn that asks for ``response_format`` or offers client tools always takes
passthrough (the seed's rule: its caller expects one direct completion).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Any

from server.domain.errors import AgentAPIError
from server.domain.runs.events import Delta, TurnEvent
from server.llm.types import ChatBackend, ChatRequest

MODES = ("passthrough", "reasoning", "auto", "orchestration")
# A plain instruction any model follows; the tag lets the built-in offline model recognise it.
CLASSIFY_PROMPT = (
    "[agentapi:classify] Decide how to answer the user's last message. Answer with one word: "
    "'reasoning' if it needs planning or several steps, else 'passthrough'."
)
PLAN_PROMPT = (
    "[agentapi:plan] Before answering, think: write a short numbered plan (at most five steps) for answering "
    "the user's last message. Do not answer it yet."
)
PLAN_CONTEXT = "Your plan for this answer:\n{plan}\nNow follow it."
CLASSIFIER_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Routing:
    """How a turn is answered: ``mode`` (passthrough or reasoning), the mode
    ``requested``, ``reason``, and for auto the classifier's model, latency
    (ms) and tokens."""

    mode: str
    requested: str
    reason: str
    classifier_model: str = ""
    classifier_latency_ms: int = 0
    classifier_tokens: int = 0

    def stored(self) -> dict[str, Any]:
        """The decision as stored on the reply (``Message.routing``)."""
        return {key: value for key, value in self.__dict__.items() if value not in ("", 0)}


def join_reasoning(*parts: str | None) -> str | None:
    """Reasoning texts of one reply (a plan call's, a step's), a blank line apart."""
    return "\n\n".join(part for part in parts if part) or None


def unavailable() -> AgentAPIError:
    """UNIMPLEMENTED (ROUTING_MODE_UNAVAILABLE) for orchestration."""
    return AgentAPIError(
        "UNIMPLEMENTED",
        "ROUTING_MODE_UNAVAILABLE",
        "routing mode 'orchestration' is not available; use passthrough, reasoning or auto",
        {"routing_mode": "orchestration"},
    )


def requested_mode(turn: str, agent: str | None) -> str:
    """The turn's mode, else the agent's default, else passthrough. Raises
    UNIMPLEMENTED (ROUTING_MODE_UNAVAILABLE) for orchestration."""
    mode = turn or agent or "passthrough"
    if mode == "orchestration":
        raise unavailable()
    return mode


def forced_passthrough(mode: str, params: dict[str, Any], client_tools: list[dict[str, Any]]) -> Routing | None:
    """Passthrough, with the reason, when the turn's parameters force it."""
    if mode == "passthrough":
        return None
    if params.get("response_format"):
        return Routing("passthrough", mode, "response_format forces passthrough")
    if client_tools:
        return Routing("passthrough", mode, "client tools force passthrough")
    return None


async def classify(backend: ChatBackend, model: str, request: ChatRequest) -> Routing:
    """Asks ``model`` whether the turn needs reasoning; passthrough, with the
    failure as its reason, when the call fails, times out or answers neither
    word (the deterministic fallback)."""
    last_user = next((m for m in reversed(request.messages) if m.get("role") == "user"), {"content": ""})
    probe = replace(
        request,
        model=model,
        messages=[{"role": "system", "content": CLASSIFY_PROMPT}, last_user],
        tools=[],
        params={},
        extra_body={},
        temperature=0.0,
        max_tokens=5,
    )
    started = time.monotonic()
    text, tokens, reason = "", 0, ""
    try:
        async with asyncio.timeout(CLASSIFIER_TIMEOUT_S), backend.stream(probe) as stream:
            async for chunk in stream:
                text += chunk.content
                if chunk.usage is not None:
                    tokens = chunk.usage.prompt_tokens + chunk.usage.completion_tokens
    except AgentAPIError as exc:
        reason = f"classifier failed: {exc.reason}"
    except TimeoutError:
        reason = "classifier failed: timed out"
    latency = int((time.monotonic() - started) * 1000)
    answer = text.strip().lower()
    if not reason:
        if "reasoning" in answer:
            return Routing("reasoning", "auto", "classifier", model, latency, tokens)
        reason = "classifier" if "passthrough" in answer else f"classifier answered {answer[:40]!r}"
    return Routing("passthrough", "auto", reason, model, latency, tokens)


def plan_request(request: ChatRequest) -> ChatRequest:
    """The planning call of a reasoning turn: the conversation, no tools, the plan instruction last."""
    return replace(
        request,
        messages=[*request.messages, {"role": "system", "content": PLAN_PROMPT}],
        tools=[],
        params={key: value for key, value in request.params.items() if key in ("user", "metadata")},
    )


def with_plan(request: ChatRequest, plan: str) -> ChatRequest:
    """The acting request: the plan in context, as a system message after the
    leading system prompt (the conversation then goes on as it was)."""
    lead = next((i for i, m in enumerate(request.messages) if m.get("role") != "system"), len(request.messages))
    note = {"role": "system", "content": PLAN_CONTEXT.format(plan=plan)}
    return replace(request, messages=[*request.messages[:lead], note, *request.messages[lead:]])


@dataclass
class Routed:
    """What :func:`route` leaves for the run: the request to act on, and whether
    it announced the run (``started`` and the inputs)."""

    request: ChatRequest
    announced: bool = False


async def route(
    state: Any, request: ChatRequest, reply: Any, stored: asyncio.Future[None], inputs: list[Any], routed: Routed
) -> AsyncIterator[TurnEvent]:
    """Decides an ``auto`` turn (the classifier runs beside the turn's first
    commit), then, for a reasoning turn, streams the plan as reasoning deltas
    and leaves the acting request (plan in context) in ``routed``. A failed
    plan call falls back to passthrough, with the failure as the reason."""
    if state.routing is None:
        state.routing = await classify(state.backend, state.router_model or request.model, request)
    if state.routing.mode == "reasoning":
        await stored
        routed.announced = True
        if not state.started:
            state.started = True
            yield TurnEvent("started", message=reply)
        for row in inputs:
            yield TurnEvent("input", message=row)
        plan, thought = [], []
        try:
            async with asyncio.timeout(max(0.0, state.deadline - time.monotonic())):
                async with state.backend.stream(plan_request(replace(request, model=reply.model))) as stream:
                    async for chunk in stream:
                        if chunk.content or chunk.reasoning:
                            (plan if chunk.content else thought).append(chunk.content or chunk.reasoning)
                            state.numbered += 1
                            text = chunk.content or chunk.reasoning
                            yield TurnEvent("delta", delta=Delta(state.numbered, "", (), (), "", text))
                        if chunk.usage is not None:
                            reply.prompt_tokens += chunk.usage.prompt_tokens
                            reply.completion_tokens += chunk.usage.completion_tokens
        except (AgentAPIError, TimeoutError) as exc:
            why = exc.reason if isinstance(exc, AgentAPIError) else "timed out"
            state.routing = replace(state.routing, mode="passthrough", reason=f"plan failed: {why}")
        else:
            reply.reasoning_content = join_reasoning("".join(thought), "".join(plan))
            routed.request = with_plan(request, "".join(plan))
    reply.routing = state.routing.stored()
