"""The upstream retry policy: how often, how long to pause, and when to give up.

Backoff, jitter and stop rules come from tenacity rather than a hand-written
loop: its "full jitter" exponential wait and composable stop conditions are
exactly the policy we want, and well tested.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, wait_random_exponential


@dataclass(frozen=True)
class RetryPolicy:
    """Attempts per model, backoff (seconds, doubling, full jitter, capped)
    and the longest wait for an attempt's first delta."""

    attempts: int = 2
    initial_backoff_s: float = 0.2
    max_backoff_s: float = 2.0
    attempt_timeout_s: float = 30.0

    def pause(self, state: RetryCallState) -> float:
        """Seconds before the next attempt: the jittered backoff, or the
        upstream's Retry-After hint when longer, never over ``max_backoff_s``."""
        jitter = wait_random_exponential(multiplier=self.initial_backoff_s, max=self.max_backoff_s)(state)
        error = state.outcome.exception() if state.outcome else None
        hint = getattr(error, "retry_after_s", None) or 0.0
        return min(max(jitter, hint), self.max_backoff_s)

    def retrying(self, deadline: float, retryable: Callable[[BaseException], bool]) -> AsyncRetrying:
        """Retries a failure that ``retryable`` accepts, up to ``attempts``
        tries, and never when the pause would run past ``deadline``
        (``time.monotonic()`` seconds); the last error is re-raised."""

        def stop(state: RetryCallState) -> bool:
            return state.attempt_number >= self.attempts or time.monotonic() + state.upcoming_sleep >= deadline

        return AsyncRetrying(stop=stop, wait=self.pause, retry=retry_if_exception(retryable), reraise=True)
