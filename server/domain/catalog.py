"""The model catalog: the upstream's models, cached with a TTL and refreshed
in the background, so a turn or a listing never waits on the upstream's
``/models`` once the first fetch has succeeded.

When a refresh fails, the last good catalog is served and marked stale
(``stale`` and ``refresh_time``, the time of the last good fetch).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import datetime

from server.domain.common import utcnow
from server.domain.errors import AgentAPIError
from server.llm.types import ChatBackend, ModelInfo

log = logging.getLogger(__name__)


class Catalog:
    """Caches ``backend.list_models()`` for ``ttl_s`` seconds; ``start()``
    keeps it fresh from a background task instead of on the request path."""

    def __init__(self, backend: ChatBackend, ttl_s: float = 60.0) -> None:
        self.backend = backend
        self.ttl_s = ttl_s
        self._models: list[ModelInfo] | None = None
        self._fetched_at = 0.0
        self._lock = asyncio.Lock()
        self._refresher: asyncio.Task[None] | None = None
        self.stale = False
        self.refresh_time: datetime | None = None

    def start(self) -> None:
        """Starts refreshing every ``ttl_s`` seconds in the background."""
        if self._refresher is None:
            self._refresher = asyncio.create_task(self._refresh_forever(), name="catalog-refresh")

    async def aclose(self) -> None:
        """Stops the background refresh."""
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
            self._refresher = None

    async def _refresh_forever(self) -> None:
        while True:
            with contextlib.suppress(AgentAPIError):
                await self.refresh()
            await asyncio.sleep(self.ttl_s)

    async def refresh(self) -> list[ModelInfo]:
        """Fetches the catalog now. On failure keeps the last good one and
        marks it stale; raises UNAVAILABLE (UPSTREAM_UNAVAILABLE, ...) only
        when no catalog was ever fetched."""
        async with self._lock:
            try:
                self._models = await self.backend.list_models()
                self.stale = False
                self.refresh_time = utcnow()
            except AgentAPIError as exc:
                if self._models is None:
                    raise
                if not self.stale:
                    log.warning("model catalog refresh failed (%s); serving the last good catalog", exc.reason)
                self.stale = True
            self._fetched_at = time.monotonic()
            return self._models

    async def models(self) -> list[ModelInfo]:
        """The catalog. With the background refresh running, the cached copy
        is returned at once; without it, an expired copy is refetched first.
        Raises UNAVAILABLE (UPSTREAM_UNAVAILABLE) only when no catalog was
        ever fetched."""
        if self._models is not None and (
            self._refresher is not None or time.monotonic() - self._fetched_at < self.ttl_s
        ):
            return self._models
        return await self.refresh()

    async def find(self, model: str) -> ModelInfo | None:
        """The catalog entry for ``model``, or None (also when the catalog is unreadable)."""
        try:
            return next((m for m in await self.models() if m.id == model), None)
        except AgentAPIError:
            return None

    async def model_ids(self) -> set[str] | None:
        """The ids in the catalog, or None when it cannot be read at all."""
        try:
            return {m.id for m in await self.models()}
        except AgentAPIError:
            return None
