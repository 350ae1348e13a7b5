"""Opaque, signed page tokens (AIP-158).

A token is ``base64url(json(payload)) + "." + hmac``. The payload carries the
cursor, its direction and a digest of the request parameters, so a token used
with other parameters, or tampered with, answers INVALID_ARGUMENT
(INVALID_PAGE_TOKEN).

Pages are keyset pages: a cursor is the sort key of the row a page starts
after (forwards) or before (backwards), never an offset, so paging stays
stable while rows are inserted or deleted: no row that existed throughout is
skipped or repeated.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

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


@dataclass(frozen=True)
class PageRequest:
    """What a list call asks for: at most ``limit`` rows after ``position``
    (before it when ``backward``); no position means the first page."""

    limit: int
    params: dict[str, Any]
    position: tuple[Any, ...] | None
    backward: bool

    @property
    def fetch(self) -> int:
        """Rows to read: one more than the page, to learn whether another follows."""
        return self.limit + 1


@dataclass(frozen=True)
class Page(Generic[Row]):
    """A page in ascending order, with ``next_page_token`` and ``previous_page_token`` (empty at either end)."""

    rows: list[Row]
    next_page_token: str
    previous_page_token: str


def time_position(values: list[Any]) -> tuple[datetime, str]:
    """Parses a (create_time, id) cursor."""
    return datetime.fromisoformat(values[0]), values[1]


def time_key(row: Any) -> list[Any]:
    """The (create_time, id) sort key of a row, as JSON."""
    return [row.create_time.isoformat(), row.id]


class PageTokens:
    """Signs and checks page tokens with a server secret."""

    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def _mac(self, body: bytes) -> str:
        return base64.urlsafe_b64encode(hmac.new(self._secret, body, hashlib.sha256).digest()[:16]).decode().rstrip("=")

    @staticmethod
    def _digest(params: dict[str, Any]) -> str:
        return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]

    def encode(self, cursor: list[Any], params: dict[str, Any], backward: bool = False) -> str:
        """A token for the page after ``cursor`` (before it when ``backward``), valid only with ``params``."""
        payload = {"c": cursor, "p": self._digest(params), **({"b": 1} if backward else {})}
        body = base64.urlsafe_b64encode(json.dumps(payload).encode()).rstrip(b"=")
        return f"{body.decode()}.{self._mac(body)}"

    def decode(self, token: str, params: dict[str, Any]) -> list[Any] | None:
        """The forward cursor in ``token``; None for an empty token. Raises INVALID_ARGUMENT
        (INVALID_PAGE_TOKEN) for a forged token or one minted for other parameters."""
        payload = self._payload(token, params)
        return list(payload["c"]) if payload else None

    def start(
        self, token: str, size: int, params: dict[str, Any], parse: Callable[[list[Any]], tuple[Any, ...]] = tuple
    ) -> PageRequest:
        """The page a request asks for: ``page_size`` checked, the cursor and
        its direction read from ``page_token`` and converted by ``parse``."""
        limit = page_size(size)
        payload = self._payload(token, params)
        if not payload:
            return PageRequest(limit, params, None, False)
        return PageRequest(limit, params, parse(list(payload["c"])), bool(payload.get("b")))

    def finish(self, rows: Sequence[Row], request: PageRequest, cursor: Callable[[Row], list[Any]]) -> Page[Row]:
        """Turns rows fetched in query order (``request.limit + 1`` of them,
        descending for a backward page) into a page in ascending order with
        both tokens; ``cursor`` gives a row's JSON-safe sort key."""
        more = len(rows) > request.limit
        kept = list(rows[: request.limit])
        if request.backward:
            kept.reverse()
            previous = self.encode(cursor(kept[0]), request.params, True) if more else ""
            following = self.encode(cursor(kept[-1]), request.params) if kept else ""
        else:
            following = self.encode(cursor(kept[-1]), request.params) if more else ""
            previous = self.encode(cursor(kept[0]), request.params, True) if kept and request.position else ""
        return Page(kept, following, previous)

    def _payload(self, token: str, params: dict[str, Any]) -> dict[str, Any] | None:
        if not token:
            return None
        body, _, mac = token.partition(".")
        bad = invalid_argument(
            "page_token is invalid, or was issued for different request parameters",
            [FieldViolation("page_token", "use the next_page_token of a call with the same parameters")],
            reason="INVALID_PAGE_TOKEN",
        )
        # Bytes: compare_digest refuses non-ASCII str, and a token is caller input.
        if not hmac.compare_digest(mac.encode(), self._mac(body.encode()).encode()):
            raise bad
        payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        if payload.get("p") != self._digest(params):
            raise bad
        return payload

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
