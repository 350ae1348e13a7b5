"""API-key authentication.

The master key (``AGENTAPI_MASTER_KEY``) is the admin of the ``default``
tenant. Static keys (``AGENTAPI_API_TOKENS``, comma-separated) are clients of
the ``default`` tenant, for simple deployments.
"""

from __future__ import annotations

import hmac

from server.domain.common import Principal
from server.domain.errors import unauthenticated
from server.store.models import DEFAULT_TENANT


class Authenticator:
    """Resolves a bearer key to a :class:`Principal`; raises UNAUTHENTICATED."""

    def __init__(self, master_key: str, static_keys: tuple[str, ...] = ()) -> None:
        self.master_key = master_key
        self.static_keys = static_keys

    async def authenticate(self, key: str) -> Principal:
        """The caller behind ``key``. Raises UNAUTHENTICATED for a missing or unknown key."""
        if not key:
            raise unauthenticated("missing API key: send 'authorization: Bearer <key>'")
        if hmac.compare_digest(key.encode(), self.master_key.encode()):
            return Principal(DEFAULT_TENANT, admin=True)
        for static in self.static_keys:
            if hmac.compare_digest(key.encode(), static.encode()):
                return Principal(DEFAULT_TENANT, admin=False)
        raise unauthenticated("invalid API key")
