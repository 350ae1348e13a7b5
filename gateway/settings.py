"""The bridge's own settings, read from ``AGENTAPI_*`` environment variables."""

from __future__ import annotations

import os
from dataclasses import dataclass

DEFAULT_MAX_REQUEST_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True)
class BridgeSettings:
    """What the bridge needs beyond the gRPC target.

    Attributes:
        cors_origins: origins a browser may call the bridge from
            (``AGENTAPI_CORS_ORIGINS``, comma-separated; ``*`` for any); empty
            means no CORS headers at all, so browsers keep the same-origin rule.
        max_request_bytes: largest request body, in bytes
            (``AGENTAPI_MAX_REQUEST_BYTES``, default 8 MiB); a larger one is
            answered 413 before it is read whole.
        readiness_timeout_s: how long ``/readyz`` waits for the gRPC health check.
    """

    cors_origins: tuple[str, ...] = ()
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    readiness_timeout_s: float = 2.0

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> BridgeSettings:
        """Settings from ``environ`` (default ``os.environ``). Raises ValueError
        for a body limit that is not a positive integer."""
        env = os.environ if environ is None else environ
        origins = tuple(o.strip() for o in env.get("AGENTAPI_CORS_ORIGINS", "").split(",") if o.strip())
        limit = int(env.get("AGENTAPI_MAX_REQUEST_BYTES", DEFAULT_MAX_REQUEST_BYTES))
        if limit <= 0:
            raise ValueError("AGENTAPI_MAX_REQUEST_BYTES must be a positive number of bytes")
        return cls(cors_origins=origins, max_request_bytes=limit)
