"""Channel construction and settings shared by the sync and async clients."""

from __future__ import annotations

import os
from dataclasses import dataclass

import grpc

DEFAULT_TARGET = "127.0.0.1:50051"
# A turn may run up to the server's AGENTAPI_MAX_TURN_DURATION_S (600 s); a shorter deadline
# would cancel long turns, so the default deadline is that long.
DEFAULT_TIMEOUT_S = 600.0
DEFAULT_MAX_RETRIES = 2
# Replies are not bounded by size (README, "Limits"): a page of long messages may pass gRPC's 4 MiB default.
# The client retries with its own backoff; gRPC's reconnect backoff (1 s, then growing)
# would fail those retries at once while the channel waits, so it is kept short.
_OPTIONS = [
    ("grpc.max_receive_message_length", -1),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2000),
]


@dataclass(frozen=True)
class Settings:
    """Resolved client settings.

    Attributes:
        target: ``host:port`` of the gRPC server (``AGENTAPI_URL``; an ``http://``
            prefix is accepted and dropped, ``https://`` selects TLS).
        api_key: sent as ``authorization: Bearer <key>`` (``AGENTAPI_API_KEY``).
        timeout: seconds, the deadline of each attempt of a unary call and of a whole stream.
        max_retries: extra attempts of a transient failure (0 disables retries).
        secure: TLS with the system's roots.
    """

    target: str
    api_key: str | None
    timeout: float | None
    max_retries: int
    secure: bool = False

    def __repr__(self) -> str:  # the key stays out of logs and tracebacks
        return f"Settings(target={self.target!r}, timeout={self.timeout}, max_retries={self.max_retries})"

    @classmethod
    def resolve(
        cls, target: str | None, api_key: str | None, timeout: float | None, max_retries: int | None
    ) -> Settings:
        raw = target or os.environ.get("AGENTAPI_URL") or DEFAULT_TARGET
        secure = raw.startswith("https://")
        for prefix in ("http://", "https://", "grpc://"):
            raw = raw.removeprefix(prefix)
        if max_retries is not None and max_retries < 0:
            raise ValueError("max_retries must be at least 0")
        return cls(
            target=raw.rstrip("/"),
            api_key=api_key if api_key is not None else os.environ.get("AGENTAPI_API_KEY"),
            timeout=timeout,
            max_retries=DEFAULT_MAX_RETRIES if max_retries is None else max_retries,
            secure=secure,
        )

    def metadata(self) -> list[tuple[str, str]]:
        """The metadata every call carries."""
        return [("authorization", f"Bearer {self.api_key}")] if self.api_key else []


def async_channel(settings: Settings) -> grpc.aio.Channel:
    """A grpc.aio channel to ``settings.target``."""
    if settings.secure:
        return grpc.aio.secure_channel(settings.target, grpc.ssl_channel_credentials(), options=_OPTIONS)
    return grpc.aio.insecure_channel(settings.target, options=_OPTIONS)


def sync_channel(settings: Settings) -> grpc.Channel:
    """A blocking grpc channel to ``settings.target``."""
    if settings.secure:
        return grpc.secure_channel(settings.target, grpc.ssl_channel_credentials(), options=_OPTIONS)
    return grpc.insecure_channel(settings.target, options=_OPTIONS)
