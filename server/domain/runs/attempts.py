"""One attempt of one model: open the upstream stream and read it up to its
first delta, within the attempt timeout. Retries and fallbacks happen only
before that first delta, so this is the whole of what may be tried again."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any

from server.domain.errors import AgentAPIError
from server.domain.retry import RetryPolicy
from server.domain.runs.failures import turn_deadline
from server.llm.types import ChatBackend, ChatChunk, ChatRequest, ChatStream

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


def attempt_record(model: str, error_reason: str, started: float) -> dict[str, Any]:
    """One entry of ``Message.attempts``: the model, its failure reason ('' for success), milliseconds."""
    return {"model": model, "error_reason": error_reason, "duration_ms": int((time.monotonic() - started) * 1000)}


def retryable(exc: BaseException) -> bool:
    """Whether a failure before the first delta is worth another attempt on the same model."""
    return isinstance(exc, AgentAPIError) and exc.reason in RETRY_REASONS


async def open_attempt(
    backend: ChatBackend, policy: RetryPolicy, request: ChatRequest, deadline: float, exits: AsyncExitStack
) -> tuple[AsyncIterator[ChatChunk], list[ChatChunk], ChatStream]:
    """Opens a stream and reads it up to its first content, refusal or
    tool-call chunk (or to its end when the content filter stopped it),
    within the attempt timeout. Returns the rest of the stream, the
    chunks read, and the stream, whose request ``exits`` now closes.

    Raises DEADLINE_EXCEEDED (UPSTREAM_TIMEOUT, TURN_DEADLINE_EXCEEDED),
    UNAVAILABLE (UPSTREAM_EMPTY_COMPLETION) or the backend's typed error.
    """
    attempt_deadline = min(deadline, time.monotonic() + policy.attempt_timeout_s)
    head: list[ChatChunk] = []
    # The attempt's own exit stack: a failed attempt closes its upstream
    # request now, not when the whole turn ends; a good one hands it on.
    attempt = AsyncExitStack()
    try:
        async with asyncio.timeout(attempt_deadline - time.monotonic()):
            stream = await attempt.enter_async_context(backend.stream(request))
            chunks = aiter(stream)
            async for chunk in chunks:
                head.append(chunk)
                if chunk.has_output:
                    exits.push_async_exit(attempt.pop_all())
                    return chunks, head, stream
            if any(c.finish_reason == "content_filter" for c in head):
                # The provider's filter stopped the reply before any text: an
                # answer (OpenAI's is a 200 with that finish reason), not a failure.
                exits.push_async_exit(attempt.pop_all())
                return chunks, head, stream
    except TimeoutError as exc:
        await attempt.aclose()
        if attempt_deadline >= deadline:
            raise turn_deadline() from exc
        raise AgentAPIError(
            "DEADLINE_EXCEEDED",
            "UPSTREAM_TIMEOUT",
            f"model {request.model!r} sent nothing for {policy.attempt_timeout_s:g} s",
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
