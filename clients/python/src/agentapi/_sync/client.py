# Generated from agentapi/_async by scripts/unasync_client.py. Do not edit.
"""``agentapi.Client``."""

from __future__ import annotations

from types import TracebackType
from typing import Self

from agentapi._sync.resources import (
    Agents,
    ApiKeys,
    Conversations,
    McpServers,
    Models,
    Tenants,
    Usage,
)
from agentapi._sync.sessions import Messages, Sessions
from agentapi._sync.transport import SyncTransport
from agentapi._channels import DEFAULT_TIMEOUT_S, Settings


class Client:
    """An agentapi client; owns one gRPC channel.

    Args:
        target: ``host:port`` (default ``AGENTAPI_URL``, else ``127.0.0.1:50051``;
            ``https://host:port`` for TLS).
        api_key: the API key (default ``AGENTAPI_API_KEY``).
        timeout: seconds; the deadline of each unary attempt and of a whole stream (default 600,
            the server's longest turn; None: no deadline).
        max_retries: extra attempts of a transient failure (UNAVAILABLE, a rate limit
            with RetryInfo, ...), with backoff honouring RetryInfo; 0 disables them.

    Use ``with Client() as client:`` (or ``client.close()``).
    """

    def __init__(
        self,
        target: str | None = None,
        *,
        api_key: str | None = None,
        timeout: float | None = DEFAULT_TIMEOUT_S,
        max_retries: int | None = None,
    ) -> None:
        self._transport = SyncTransport(Settings.resolve(target, api_key, timeout, max_retries))
        self.agents = Agents(self._transport)
        self.conversations = Conversations(self._transport)
        self.sessions = Sessions(self._transport)
        self.messages = Messages(self._transport)
        self.models = Models(self._transport)
        self.tenants = Tenants(self._transport)
        self.api_keys = ApiKeys(self._transport)
        self.usage = Usage(self._transport)
        self.mcp_servers = McpServers(self._transport)

    @property
    def target(self) -> str:
        """The server's ``host:port``."""
        return self._transport.settings.target

    def close(self) -> None:
        """Closes the channel."""
        self._transport.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
