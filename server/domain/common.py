"""Small shared rules: who is calling, ids and clocks."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from server.domain.errors import AgentAPIError, FieldViolation, invalid_argument

DEFAULT_TENANT = "default"


@dataclass(frozen=True)
class Principal:
    """The authenticated caller: its tenant, and whether it may administer.

    An admin of the ``default`` tenant (the master key among them) is an
    operator: it manages tenants and agents and sees every tenant's usage.
    """

    tenant_id: str
    admin: bool

    @property
    def operator(self) -> bool:
        """Whether the caller administers the whole deployment."""
        return self.admin and self.tenant_id == DEFAULT_TENANT


def require_operator(principal: Principal) -> None:
    """Raises PERMISSION_DENIED (OPERATOR_REQUIRED) unless the caller is an operator."""
    if not principal.operator:
        raise AgentAPIError(
            "PERMISSION_DENIED", "OPERATOR_REQUIRED", "only the master key or admin keys of 'default' may do this"
        )


def utcnow() -> datetime:
    """Naive UTC now, as stored in the database."""
    return datetime.now(UTC).replace(tzinfo=None)


def new_id() -> str:
    """A new random UUID in canonical text form."""
    return str(uuid.uuid4())


def is_uuid(value: str) -> bool:
    """Whether ``value`` is a canonical UUID."""
    try:
        return str(uuid.UUID(value)) == value.lower()
    except ValueError:
        return False


def require_uuid(value: str, field: str, reason: str) -> str:
    """Returns ``value`` lower-cased if it is a UUID; else raises INVALID_ARGUMENT
    with ``reason`` (for example INVALID_SESSION_ID) naming ``field``."""
    if not is_uuid(value):
        raise invalid_argument(
            f"{field} must be a UUID, got {value!r}",
            [FieldViolation(field, "must be a UUID such as 123e4567-e89b-12d3-a456-426614174000")],
            reason=reason,
        )
    return value.lower()
