# Generated from agentapi/_async by scripts/unasync_client.py. Do not edit.
"""What every resource shares: the transport, request building, paging."""

from __future__ import annotations

from collections.abc import Iterator, Iterable
from typing import Any, TypeVar

from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.message import Message as ProtoMessage

from agentapi._sync.transport import SyncTransport
from agentapi._retry import Safety

M = TypeVar("M", bound=ProtoMessage)
R = TypeVar("R", bound=ProtoMessage)


def build(cls: type[M], message: M | None, fields: dict[str, Any]) -> M:
    """``message`` (a copy) with ``fields`` set over it, or ``cls(**fields)``.

    Raises:
        TypeError: ``message`` is not a ``cls``; ValueError/TypeError from protobuf for a bad field.
    """
    if message is None:
        return cls(**fields)
    if not isinstance(message, cls):
        raise TypeError(f"expected {cls.__name__}, got {type(message).__name__}")
    result = cls()
    result.CopyFrom(message)
    for name in fields:  # a keyword replaces the field, even with its zero value
        result.ClearField(name)
    result.MergeFrom(cls(**fields))
    return result


def mask(paths: Iterable[str] | None, fields: dict[str, Any], body: ProtoMessage) -> FieldMask:
    """The update mask: ``paths`` when given, else the fields set in ``body`` (its ``id`` aside)
    and the keyword fields passed (which may set a zero value)."""
    if paths is None:
        paths = set(fields) | {f.name for f, _ in body.ListFields() if f.name != "id"}
    return FieldMask(paths=sorted(paths))


class SyncResource:
    """One service's methods over the client's transport."""

    _service = ""

    def __init__(self, transport: SyncTransport) -> None:
        self._transport = transport

    def _path(self, method: str) -> str:
        return f"/agentapi.v1.{self._service}/{method}"

    def _call(
        self,
        method: str,
        request: ProtoMessage,
        response_type: type[R],
        safety: Safety = Safety.READ,
        idempotency_key: str | None = None,
    ) -> R:
        return self._transport.unary(self._path(method), request, response_type, safety, idempotency_key)

    def _pages(self, method: str, request: M, response_type: type[R]) -> Iterator[R]:
        """Every page, following ``next_page_token`` until it is empty."""
        page_request: Any = type(request)()
        page_request.CopyFrom(request)
        while True:
            page: Any = self._call(method, page_request, response_type)
            yield page
            if not page.next_page_token:
                return
            page_request.page_token = page.next_page_token

    def _items(self, method: str, request: M, response_type: type[R], field: str) -> Iterator[Any]:
        """Every item of every page."""
        for page in self._pages(method, request, response_type):
            for item in getattr(page, field):
                yield item
