"""Encryption of stored secrets (MCP header and env values).

The key is derived from ``AGENTAPI_SECRET_KEY`` with HKDF-SHA256 (a fixed,
purpose-bound ``info``), so any long random string works as the setting and
the same setting never doubles as another key. Values are sealed with
cryptography's Fernet (AES-128-CBC + HMAC-SHA256, authenticated): a token
altered in the database, or read with another key, fails to open rather than
yielding garbage.
"""

from __future__ import annotations

import base64
import json

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from server.domain.errors import AgentAPIError

HKDF_INFO = b"agentapi/v1 stored secrets (fernet)"


def secret_key_required() -> AgentAPIError:
    """FAILED_PRECONDITION (SECRET_KEY_REQUIRED): secrets sent, nowhere safe to keep them."""
    return AgentAPIError(
        "FAILED_PRECONDITION",
        "SECRET_KEY_REQUIRED",
        "header and env values are stored encrypted, and no key is configured: set AGENTAPI_SECRET_KEY",
    )


def secret_key_mismatch() -> AgentAPIError:
    """FAILED_PRECONDITION (SECRET_KEY_MISMATCH): stored secrets cannot be opened."""
    return AgentAPIError(
        "FAILED_PRECONDITION",
        "SECRET_KEY_MISMATCH",
        "the stored header or env values cannot be decrypted: AGENTAPI_SECRET_KEY is unset or changed"
        " since they were stored; set it back, or store the values again",
    )


class SecretBox:
    """Seals and opens a JSON object of secrets with the configured key.

    Args:
        secret_key: ``AGENTAPI_SECRET_KEY``; None or empty means no key, and
            then :meth:`seal` and :meth:`open` raise FAILED_PRECONDITION.
    """

    def __init__(self, secret_key: str | None) -> None:
        self._fernet: Fernet | None = None
        if secret_key:
            derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=HKDF_INFO).derive(secret_key.encode())
            self._fernet = Fernet(base64.urlsafe_b64encode(derived))

    @property
    def configured(self) -> bool:
        """Whether a key is configured."""
        return self._fernet is not None

    def seal(self, values: dict[str, dict[str, str]]) -> str:
        """A Fernet token (ASCII) of ``values`` as JSON. Raises FAILED_PRECONDITION (SECRET_KEY_REQUIRED)."""
        if self._fernet is None:
            raise secret_key_required()
        return self._fernet.encrypt(json.dumps(values, sort_keys=True).encode()).decode()

    def open(self, token: str | None) -> dict[str, dict[str, str]]:
        """The values sealed in ``token`` (``{}`` for None). Raises
        FAILED_PRECONDITION (SECRET_KEY_MISMATCH) without a key or with another one."""
        if not token:
            return {}
        if self._fernet is None:
            raise secret_key_mismatch()
        try:
            return json.loads(self._fernet.decrypt(token.encode()))
        except InvalidToken as exc:
            raise secret_key_mismatch() from exc
