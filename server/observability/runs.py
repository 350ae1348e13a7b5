"""What a run reports: its ``invoke_agent`` span, a ``chat {model}`` CLIENT span
per model attempt, an ``execute_tool {tool}`` span per server tool call, and
the run's metrics (server/observability/metrics.py).

The run layer calls a few methods, once per run, attempt, step or tool call,
never per delta. :func:`begin_run` puts the run's :class:`RunObserver` in a
context variable that the step and tool code read with :func:`current` (tool
calls run in tasks, which copy it), so no signature of the run layer changes.
Spans are parented explicitly (no context is attached across a ``yield``);
only the opening of an upstream request makes the attempt's span current,
so the upstream client's ``traceparent`` names it.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import time
from collections.abc import Iterator
from typing import Any

from opentelemetry.trace import INVALID_SPAN, Span, SpanKind

from server.observability import genai, metrics, tracing

QUOTA_REASONS = frozenset({"BUDGET_EXCEEDED", "RATE_LIMITED"})

_RUN: contextvars.ContextVar[RunObserver | None] = contextvars.ContextVar("agentapi_run_observer", default=None)


def _provider_name(backend: Any) -> str:
    return str(getattr(backend, "provider_name", "openai"))


class RunObserver:
    """One run's span and metric labels. Methods are no-ops for spans when tracing is off."""

    def __init__(
        self, tenant: str, session_id: str, agent: str, conversation_id: str, model: str, provider: str
    ) -> None:
        self.started = time.monotonic()
        self.tenant = metrics.bounded("tenant", tenant)
        self.agent = metrics.bounded("agent", agent)
        self.provider = provider
        self.status = ""
        self.steps = 0
        self._ended = False
        self._attempt: Span = INVALID_SPAN  # the attempt that streams, until its step ends
        self._last_reason = ""  # the last failed attempt's, for the retry counter
        self.span: Span = INVALID_SPAN
        if tracing.enabled():
            self.span = tracing.start(f"invoke_agent {agent}" if agent else "invoke_agent", SpanKind.INTERNAL)
            if self.span.is_recording():
                self.span.set_attributes(
                    {
                        genai.OPERATION_NAME: "invoke_agent",
                        genai.PROVIDER_NAME: provider,
                        genai.REQUEST_MODEL: model,
                        genai.CONVERSATION_ID: conversation_id or session_id,
                        genai.TENANT_ID: tenant,
                        genai.SESSION_ID: session_id,
                        **({genai.AGENT_NAME: agent} if agent else {}),
                    }
                )
        metrics.RUNS_IN_FLIGHT.inc()

    # -- attempts --------------------------------------------------------
    def attempt_started(self, model: str, number: int, fallback: bool, request: Any = None) -> Span:
        """A ``chat {model}`` CLIENT span for attempt ``number`` (1-based) of
        ``model``; counts a retry when ``number`` > 1. Make it current while
        the upstream request opens (``tracing.current``). It ends with
        :meth:`attempt_failed`, else with the step (:meth:`step_ended`), else
        with the run (cancelled)."""
        if number > 1:
            metrics.RETRIES.labels(metrics.bounded("model", model), self._last_reason or "-").inc()
        if not tracing.enabled():
            return INVALID_SPAN
        span = tracing.start(f"chat {model}", SpanKind.CLIENT, parent=self.span)
        if span.is_recording():
            span.set_attributes(
                {
                    genai.OPERATION_NAME: "chat",
                    genai.PROVIDER_NAME: self.provider,
                    genai.REQUEST_MODEL: model,
                    genai.ATTEMPT: number,
                    genai.FALLBACK: fallback,
                    genai.STEP: self.steps + 1,
                }
            )
            if request is not None:
                if request.max_tokens:
                    span.set_attribute(genai.REQUEST_MAX_TOKENS, request.max_tokens)
                if request.temperature is not None:
                    span.set_attribute(genai.REQUEST_TEMPERATURE, request.temperature)
                if tracing.capture_content():
                    span.set_attribute(genai.INPUT_MESSAGES, json.dumps(request.messages, default=str))
        self._attempt = span
        return span

    def attempt_failed(self, span: Span, model: str, reason: str) -> None:
        """The attempt failed before its first delta with ``reason``."""
        self._last_reason = reason
        self._attempt = INVALID_SPAN
        metrics.ATTEMPTS.labels(metrics.bounded("model", model), reason).inc()
        tracing.end(span, reason)

    def fallback(self, model: str, reason: str) -> None:
        """The run moves from ``model`` to the next fallback model."""
        metrics.FALLBACKS.labels(metrics.bounded("model", model), reason).inc()

    # -- steps -----------------------------------------------------------
    def step_ended(self, reply: Any, step: int, ttft_s: float | None) -> None:
        """A model step stored its reply (its usage, timings, status and error),
        its first delta ``ttft_s`` seconds after its start (None: no delta):
        ends the attempt span and records the step's metrics."""
        self.steps = step
        self.status = reply.status
        error = (reply.error or {}).get("reason", "") if reply.error else ""
        model = metrics.bounded("model", reply.model or "")
        span, self._attempt = self._attempt, INVALID_SPAN
        if span is not INVALID_SPAN or ttft_s is not None:
            metrics.ATTEMPTS.labels(model, error or "ok").inc()
        if ttft_s is not None:
            labels = ("chat", self.provider, model)
            metrics.TTFT.labels(*labels).observe(ttft_s)
            if reply.completion_tokens > 1:
                tpot = max(0.0, reply.duration_ms / 1000 - ttft_s) / (reply.completion_tokens - 1)
                metrics.TPOT.labels(*labels).observe(tpot)
        if reply.prompt_tokens:
            metrics.TOKENS.labels(self.tenant, self.agent, model, "input").inc(reply.prompt_tokens)
        if reply.completion_tokens:
            metrics.TOKENS.labels(self.tenant, self.agent, model, "output").inc(reply.completion_tokens)
        if reply.reasoning_tokens:
            metrics.TOKENS.labels(self.tenant, self.agent, model, "reasoning").inc(reply.reasoning_tokens)
        if reply.cost_usd:
            metrics.COST.labels(self.tenant, self.agent, model).inc(float(reply.cost_usd))
        if span.is_recording():
            span.set_attributes(
                {
                    genai.RESPONSE_MODEL: reply.model or "",
                    genai.RESPONSE_ID: reply.upstream_request_id or "",
                    genai.RESPONSE_FINISH_REASONS: [reply.finish_reason] if reply.finish_reason else [],
                    genai.USAGE_INPUT_TOKENS: reply.prompt_tokens,
                    genai.USAGE_OUTPUT_TOKENS: reply.completion_tokens,
                    genai.USAGE_REASONING_OUTPUT_TOKENS: reply.reasoning_tokens,
                }
            )
            if tracing.capture_content():
                output = {"role": "assistant", "content": reply.content, "tool_calls": reply.tool_calls or []}
                span.set_attribute(genai.OUTPUT_MESSAGES, json.dumps([output], default=str))
        tracing.end(span, error if reply.status == "failed" else "")

    # -- tool calls ------------------------------------------------------
    @contextlib.contextmanager
    def tool_call(self, row: Any, arguments: str = "") -> Iterator[dict[str, Any]]:
        """Wraps one server tool call: an ``execute_tool {name}`` span and the
        tool metrics. Set ``holder["outcome"]`` (a ToolOutcome) in the block."""
        executor = str(row.executor or "builtin")
        kind = "mcp" if executor.startswith("mcp") else executor
        name = str(row.name or "")
        # An MCP tool is <server id>__<tool>: the id stays out of the label.
        label = metrics.bounded("tool", name.split("__", 1)[-1] if kind == "mcp" else name)
        span = INVALID_SPAN
        if tracing.enabled():
            span = tracing.start(f"execute_tool {name}", SpanKind.INTERNAL, parent=self.span)
            if span.is_recording():
                span.set_attributes(
                    {
                        genai.OPERATION_NAME: "execute_tool",
                        genai.TOOL_NAME: name,
                        genai.TOOL_CALL_ID: str(row.tool_call_id or ""),
                        genai.TOOL_TYPE: "function",
                        genai.TOOL_EXECUTOR: kind,
                    }
                )
                if arguments and tracing.capture_content():
                    span.set_attribute(genai.TOOL_CALL_ARGUMENTS, arguments)
        holder: dict[str, Any] = {}
        began = time.monotonic()
        outcome_label = "cancelled"
        try:
            yield holder
            outcome = holder.get("outcome")
            outcome_label = (outcome.error_reason or "failed") if outcome is not None and outcome.error_reason else "ok"
            if span.is_recording() and outcome is not None and tracing.capture_content():
                span.set_attribute(genai.TOOL_CALL_RESULT, str(outcome.output))
        finally:
            seconds = time.monotonic() - began
            metrics.TOOL_CALLS.labels(label, kind, outcome_label).inc()
            metrics.TOOL_DURATION.labels(label, kind, outcome_label).observe(seconds)
            if span.is_recording():
                span.set_attribute(genai.TOOL_OUTCOME, outcome_label)
            tracing.end(span, "" if outcome_label == "ok" else outcome_label)

    # -- the run ---------------------------------------------------------
    def end(self) -> None:
        """The run's last event went out (or it stopped): its span and metrics. Idempotent."""
        if self._ended:
            return
        self._ended = True
        if _RUN.get() is self:
            _RUN.set(None)
        status = self.status or "cancelled"
        metrics.RUNS_IN_FLIGHT.dec()
        metrics.RUN_DURATION.labels(status).observe(time.monotonic() - self.started)
        metrics.RUN_STEPS.labels(status).observe(self.steps)
        if self._attempt is not INVALID_SPAN:  # stopped while streaming, before the step stored its end
            tracing.end(self._attempt, "cancelled")
        if self.span.is_recording():
            self.span.set_attributes({genai.RUN_STATUS: status, genai.RUN_STEPS: self.steps})
        tracing.end(self.span, status if status in ("failed", "cancelled") else "")


class _NoRun(RunObserver):
    """Stands in when no run is observed (a step driven outside ``TurnRunner.run``)."""

    def __init__(self) -> None:  # no span, no gauge
        self.started = time.monotonic()
        self.tenant = self.agent = "-"
        self.provider = "openai"
        self.status = ""
        self.steps = 0
        self._ended = True
        self._attempt = INVALID_SPAN
        self._last_reason = ""
        self.span = INVALID_SPAN


def begin_run(
    tenant: str, session_id: str, agent: str, conversation_id: str, model: str, backend: Any = None
) -> RunObserver:
    """Starts observing a run (span, in-flight gauge) and makes it :func:`current`; end it with ``.end()``."""
    observer = RunObserver(tenant, session_id, agent, conversation_id, model, _provider_name(backend))
    _RUN.set(observer)
    return observer


def current() -> RunObserver:
    """The run being observed in this context, or a stand-in that records only metrics."""
    return _RUN.get() or _NoRun()
