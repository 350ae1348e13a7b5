"""Redis as the fast path between replicas, when ``AGENTAPI_REDIS_URL`` is set:
the live tail of event logs (a Redis stream per run) and cancel requests
(a pub/sub channel). The database stays the record of both; Redis only
saves a follower or a runner from polling it.

redis-py's asyncio client (already a dependency for the rate limits).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Sequence

import redis.asyncio as redis

from server.store.run_events import Chunk

log = logging.getLogger(__name__)

CANCEL_CHANNEL = "agentapi:cancel"


def _stream(run_id: str) -> str:
    return f"agentapi:run:{run_id}"


class RedisSignals:
    """The run tails and the cancel channel on one Redis."""

    def __init__(self, url: str, retention_s: float) -> None:
        self.client = redis.Redis.from_url(url)
        self.retention_s = max(1, int(retention_s))

    async def publish(self, chunks: Sequence[Chunk]) -> None:
        """Adds each chunk to its run's stream (kept ``retention_s``)."""
        async with self.client.pipeline(transaction=False) as pipe:
            for chunk in chunks:
                key = _stream(chunk.run_id)
                fields = {
                    "first": chunk.first_sequence,
                    "last": chunk.last_sequence,
                    "terminal": int(chunk.terminal),
                    "payload": chunk.payload,
                }
                pipe.xadd(key, fields)  # type: ignore[arg-type]
                pipe.expire(key, self.retention_s)
            await pipe.execute()

    async def follow(self, run_id: str, block_ms: int) -> AsyncIterator[Chunk | None]:
        """The run's chunks as they are published, from the stream's start;
        None after each ``block_ms`` without one (so the caller can check the
        run's state)."""
        last_id = "0-0"
        while True:
            found = await self.client.xread({_stream(run_id): last_id}, block=block_ms, count=100)
            if not found:
                yield None
                continue
            for _, entries in found:
                for entry_id, fields in entries:
                    last_id = entry_id
                    yield Chunk(
                        run_id,
                        "",
                        int(fields[b"first"]),
                        int(fields[b"last"]),
                        fields[b"terminal"] == b"1",
                        fields[b"payload"],
                    )

    async def request_cancel(self, run_id: str) -> None:
        """Tells every replica to cancel ``run_id``."""
        await self.client.publish(CANCEL_CHANNEL, run_id)

    async def listen_cancels(self, cancel: Callable[[str], None]) -> None:
        """Calls ``cancel(run_id)`` for each cancel request until cancelled;
        reconnects after a Redis failure."""
        while True:
            try:
                async with self.client.pubsub() as pubsub:
                    await pubsub.subscribe(CANCEL_CHANNEL)
                    async for message in pubsub.listen():
                        if message.get("type") == "message":
                            data = message["data"]
                            cancel(data.decode() if isinstance(data, bytes) else str(data))
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("Redis cancel channel lost; resubscribing in 1 s", exc_info=True)
                await asyncio.sleep(1)

    async def aclose(self) -> None:
        """Closes the connection pool."""
        await self.client.aclose()
