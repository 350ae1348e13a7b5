"""Domain errors: one exception type that carries everything the edge needs.

Adapters (store, llm) and domain services raise :class:`AgentAPIError`; the
gRPC interceptor turns it into a ``google.rpc.Status`` with one ``ErrorInfo``
(domain ``agentapi``), plus ``BadRequest`` and ``RetryInfo`` where they apply.
``code`` names a canonical gRPC status code, so this module needs no grpc.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

ERROR_DOMAIN = "agentapi"


@dataclass(frozen=True)
class FieldViolation:
    """One bad field: ``field`` is a dotted path such as ``agent.temperature``."""

    field: str
    description: str


@dataclass
class AgentAPIError(Exception):
    """A typed failure.

    Attributes:
        code: canonical gRPC status code name, for example ``NOT_FOUND``.
        reason: UPPER_SNAKE reason for ``ErrorInfo.reason``, for example
            ``AGENT_NOT_FOUND``.
        message: developer-facing message, safe to show to callers.
        metadata: ``ErrorInfo.metadata`` (string keys and values).
        field_violations: ``BadRequest`` field violations, if any.
        retry_after_s: seconds for ``RetryInfo``, when a retry helps.
    """

    code: str
    reason: str
    message: str
    metadata: dict[str, str] = field(default_factory=dict)
    field_violations: Sequence[FieldViolation] = ()
    retry_after_s: float | None = None

    def __post_init__(self) -> None:
        super().__init__(self.message)

    def __str__(self) -> str:
        return f"{self.code} {self.reason}: {self.message}"


def invalid_argument(
    message: str, violations: Sequence[FieldViolation] = (), reason: str = "FIELD_VIOLATION"
) -> AgentAPIError:
    """INVALID_ARGUMENT with BadRequest field violations."""
    return AgentAPIError("INVALID_ARGUMENT", reason, message, field_violations=tuple(violations))


def not_found(kind: str, resource_id: str) -> AgentAPIError:
    """NOT_FOUND with reason ``<KIND>_NOT_FOUND``, e.g. ``not_found("session", id)``."""
    return AgentAPIError(
        "NOT_FOUND",
        f"{kind.upper()}_NOT_FOUND",
        f"{kind} {resource_id!r} was not found",
        metadata={f"{kind}_id": resource_id},
    )


def unauthenticated(message: str = "missing or invalid API key") -> AgentAPIError:
    """UNAUTHENTICATED: the ``authorization: Bearer <key>`` is missing or wrong."""
    return AgentAPIError("UNAUTHENTICATED", "UNAUTHENTICATED", message)


class Violations:
    """Collects field violations so that every bad field is reported at once."""

    def __init__(self) -> None:
        self.items: list[FieldViolation] = []

    def add(self, field_path: str, description: str) -> None:
        """Records that ``field_path`` is bad, and why."""
        self.items.append(FieldViolation(field_path, description))

    def raise_if_any(self, message: str = "the request has invalid fields", reason: str = "FIELD_VIOLATION") -> None:
        """Raises INVALID_ARGUMENT (``reason``, FIELD_VIOLATION by default) naming every recorded field."""
        if self.items:
            fields = ", ".join(v.field for v in self.items)
            raise invalid_argument(f"{message}: {fields}", self.items, reason)
