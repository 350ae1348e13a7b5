"""Opaque, signed page tokens (AIP-158).

A token is ``base64url(json(payload)) + "." + hmac``. The payload carries the
cursor and a digest of the request parameters, so a token used with other
parameters, or tampered with, answers INVALID_ARGUMENT (INVALID_PAGE_TOKEN).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

from server.domain.errors import FieldViolation, invalid_argument

Row = TypeVar("Row")

DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100


def page_size(requested: int) -> int:
    """Validates ``page_size``: 0 means 20; 1 to 100 is taken as is.

    Raises INVALID_ARGUMENT (FIELD_VIOLATION) for a negative value or one over 100.
    """
    if requested == 0:
        return DEFAULT_PAGE_SIZE
    if requested < 0 or requested > MAX_PAGE_SIZE:
        raise invalid_argument(
            "page_size must be between 1 and 100",
            [FieldViolation("page_size", f"must be 1 to {MAX_PAGE_SIZE}, or 0 for {DEFAULT_PAGE_SIZE}")],
        )
    return requested


class PageTokens:
    """Signs and checks page tokens with a server secret."""

    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def _mac(self, body: bytes) -> str:
        return base64.urlsafe_b64encode(hmac.new(self._secret, body, hashlib.sha256).digest()[:16]).decode().rstrip("=")

    @staticmethod
    def _digest(params: dict[str, Any]) -> str:
        return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]

    def encode(self, cursor: list[Any], params: dict[str, Any]) -> str:
        """A token for the page after ``cursor``, valid only with ``params``."""
        body = base64.urlsafe_b64encode(json.dumps({"c": cursor, "p": self._digest(params)}).encode()).rstrip(b"=")
        return f"{body.decode()}.{self._mac(body)}"

    def decode(self, token: str, params: dict[str, Any]) -> list[Any] | None:
        """The cursor in ``token``; None for an empty token. Raises INVALID_ARGUMENT
        (INVALID_PAGE_TOKEN) for a forged token or one minted for other parameters."""
        if not token:
            return None
        body, _, mac = token.partition(".")
        bad = invalid_argument(
            "page_token is invalid, or was issued for different request parameters",
            [FieldViolation("page_token", "use the next_page_token of a call with the same parameters")],
            reason="INVALID_PAGE_TOKEN",
        )
        if not hmac.compare_digest(mac, self._mac(body.encode())):
            raise bad
        payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        if payload.get("p") != self._digest(params):
            raise bad
        return list(payload["c"])

    def time_cursor(self, token: str, params: dict[str, Any]) -> tuple[datetime, str] | None:
        """The (create_time, id) cursor in ``token``; None for the first page."""
        cursor = self.decode(token, params)
        return (datetime.fromisoformat(cursor[0]), cursor[1]) if cursor else None

    def page(
        self, rows: Sequence[Row], limit: int, params: dict[str, Any], cursor: Callable[[Row], list[Any]] | None = None
    ) -> tuple[list[Row], str]:
        """Trims ``rows`` (fetched with ``limit + 1``) to ``limit`` and mints the
        next page token from the last row; ``cursor`` defaults to (create_time, id)."""
        if len(rows) <= limit:
            return list(rows), ""
        kept = list(rows[:limit])
        last = kept[-1]
        values = cursor(last) if cursor else [last.create_time.isoformat(), last.id]  # type: ignore[attr-defined]
        return kept, self.encode(values, params)
