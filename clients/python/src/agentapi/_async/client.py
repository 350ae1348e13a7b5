"""``agentapi.AsyncClient``."""

from __future__ import annotations

from types import TracebackType
from typing import Self

from agentapi._async.resources import (
    AsyncAgents,
    AsyncApiKeys,
    AsyncConversations,
    AsyncMcpServers,
    AsyncModels,
    AsyncTenants,
    AsyncUsage,
)
from agentapi._async.sessions import AsyncMessages, AsyncSessions
from agentapi._async.transport import AsyncTransport
from agentapi._channels import DEFAULT_TIMEOUT_S, Settings


class AsyncClient:
    """An agentapi client; owns one gRPC channel.

    Args:
        target: ``host:port`` (default ``AGENTAPI_URL``, else ``127.0.0.1:50051``;
            ``https://host:port`` for TLS).
        api_key: the API key (default ``AGENTAPI_API_KEY``).
        timeout: seconds; the deadline of each unary attempt and of a whole stream (default 600,
            the server's longest turn; None: no deadline).
        max_retries: extra attempts of a transient failure (UNAVAILABLE, a rate limit
            with RetryInfo, ...), with backoff honouring RetryInfo; 0 disables them.

    Use ``async with AsyncClient() as client:`` (or ``await client.close()``).
    """

    def __init__(
        self,
        target: str | None = None,
        *,
        api_key: str | None = None,
        timeout: float | None = DEFAULT_TIMEOUT_S,
        max_retries: int | None = None,
    ) -> None:
        self._transport = AsyncTransport(Settings.resolve(target, api_key, timeout, max_retries))
        self.agents = AsyncAgents(self._transport)
        self.conversations = AsyncConversations(self._transport)
        self.sessions = AsyncSessions(self._transport)
        self.messages = AsyncMessages(self._transport)
        self.models = AsyncModels(self._transport)
        self.tenants = AsyncTenants(self._transport)
        self.api_keys = AsyncApiKeys(self._transport)
        self.usage = AsyncUsage(self._transport)
        self.mcp_servers = AsyncMcpServers(self._transport)

    @property
    def target(self) -> str:
        """The server's ``host:port``."""
        return self._transport.settings.target

    async def close(self) -> None:
        """Closes the channel."""
        await self._transport.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()
