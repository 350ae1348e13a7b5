"""Validation against the published Open Responses OpenAPI document
(tests/specs/open-responses/openapi.json, version 2026-04-24): response
objects against ``ResponseResource``, streamed events against the
``*StreamingEvent`` schema whose ``type`` they name (an event type the
document does not define fails: only documented events may be emitted)."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

SPEC = Path(__file__).resolve().parent.parent / "specs" / "open-responses" / "openapi.json"
URI = "urn:open-responses"


@functools.cache
def _document() -> dict[str, Any]:
    return json.loads(SPEC.read_text())


@functools.cache
def _registry() -> Registry:
    # An OpenAPI 3.1 document is not a JSON Schema itself: its schemas are JSON Schema 2020-12.
    resource = Resource(contents=_document(), specification=DRAFT202012)
    return Registry().with_resource(URI, resource)


def _validator(name: str) -> Draft202012Validator:
    return Draft202012Validator({"$ref": f"{URI}#/components/schemas/{name}"}, registry=_registry())


@functools.cache
def _event_schemas() -> dict[str, str]:
    found = {}
    for name, schema in _document()["components"]["schemas"].items():
        if name.endswith("StreamingEvent"):
            for kind in schema["properties"]["type"].get("enum", ()):
                found[kind] = name
    return found


def _check(name: str, instance: Any) -> None:
    errors = sorted(_validator(name).iter_errors(instance), key=lambda e: e.path)
    if errors:
        raise AssertionError(
            f"not a valid {name}: " + "; ".join(f"{list(e.absolute_path)}: {e.message[:300]}" for e in errors[:5])
        )


def validate_response(body: dict[str, Any]) -> None:
    """Raises AssertionError unless ``body`` is a valid ``ResponseResource``."""
    _check("ResponseResource", body)


def validate_event(event: dict[str, Any]) -> None:
    """Raises AssertionError unless ``event`` is a documented, valid streaming event."""
    kind = event.get("type")
    assert kind in _event_schemas(), f"undocumented event type {kind!r}"
    _check(_event_schemas()[kind], event)
