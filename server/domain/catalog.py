"""The model catalog: the upstream's models, cached with a TTL.

When a refresh fails, the last good catalog is served and marked stale.
"""

from __future__ import annotations

import asyncio
import logging
import time

from server.domain.errors import AgentAPIError
from server.llm.types import ChatBackend, ModelInfo

log = logging.getLogger(__name__)


class Catalog:
    """Caches ``backend.list_models()`` for ``ttl_s`` seconds."""

    def __init__(self, backend: ChatBackend, ttl_s: float = 60.0) -> None:
        self.backend = backend
        self.ttl_s = ttl_s
        self._models: list[ModelInfo] | None = None
        self._fetched_at = 0.0
        self._lock = asyncio.Lock()
        self.stale = False

    async def models(self) -> list[ModelInfo]:
        """The catalog. Raises UNAVAILABLE (UPSTREAM_UNAVAILABLE) only when no
        catalog was ever fetched."""
        if self._models is not None and time.monotonic() - self._fetched_at < self.ttl_s:
            return self._models
        async with self._lock:
            if self._models is not None and time.monotonic() - self._fetched_at < self.ttl_s:
                return self._models
            try:
                self._models = await self.backend.list_models()
                self.stale = False
            except AgentAPIError:
                if self._models is None:
                    raise
                log.warning("model catalog refresh failed; serving the last good catalog")
                self.stale = True
            self._fetched_at = time.monotonic()
            return self._models

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
