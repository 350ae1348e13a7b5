"""API-key authentication.

* The master key (``AGENTAPI_MASTER_KEY``) is the admin of the ``default``
  tenant: an operator.
* Static keys (``AGENTAPI_API_TOKENS``, comma-separated; the seed's
  ``API_TOKENS``) are clients of the ``default`` tenant, for simple deployments.
* Stored keys are looked up by the SHA-256 of the secret on every request, so
  revocation, expiry and tenant deletion take effect on the next request.
  Secrets carry 256 random bits, so a fast hash is enough: nothing to brute-force.
"""

from __future__ import annotations

import hashlib
import hmac

from server.domain.common import DEFAULT_TENANT, Principal, utcnow
from server.domain.errors import unauthenticated
from server.store.accounts import ApiKeyRepository
from server.store.db import Database


def secret_hash(secret: str) -> str:
    """The stored form of a key's secret: hex SHA-256."""
    return hashlib.sha256(secret.encode()).hexdigest()


class Authenticator:
    """Resolves a bearer key to a :class:`Principal`; raises UNAUTHENTICATED."""

    def __init__(self, db: Database, master_key: str, static_keys: tuple[str, ...] = ()) -> None:
        self.db = db
        self.master_key = master_key
        self.static_keys = static_keys

    async def authenticate(self, key: str) -> Principal:
        """The caller behind ``key``. Raises UNAUTHENTICATED for a missing,
        malformed, unknown, revoked or expired key, or one of a deleted tenant."""
        if not key:
            raise unauthenticated("missing API key: send 'authorization: Bearer <key>'")
        if hmac.compare_digest(key.encode(), self.master_key.encode()):
            return Principal(DEFAULT_TENANT, admin=True)
        for static in self.static_keys:
            if hmac.compare_digest(key.encode(), static.encode()):
                return Principal(DEFAULT_TENANT, admin=False)
        if len(key) > 256 or not key.isascii():
            raise unauthenticated("malformed API key")
        async with self.db.session() as session:
            found = await ApiKeyRepository(session).by_hash(secret_hash(key))
        if found is None:
            raise unauthenticated("invalid API key")
        api_key, tenant = found
        now = utcnow()
        if api_key.revoke_time is not None:
            raise unauthenticated("the API key was revoked")
        if api_key.expire_time is not None and api_key.expire_time <= now:
            raise unauthenticated("the API key has expired")
        if tenant.delete_time is not None:
            raise unauthenticated("the API key's tenant was deleted")
        return Principal(api_key.tenant_id, admin=api_key.scope == "admin")
