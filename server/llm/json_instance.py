"""A deterministic JSON value valid against a JSON Schema: how the offline
model answers structured-output requests without sampling anything.

Covers what the openai SDKs and pydantic emit for ``response_format``:
objects (every property, so strict schemas hold), arrays, strings, numbers,
integers, booleans, null, ``enum``, ``const``, ``anyOf``/``oneOf``/``allOf``
and local ``$ref`` (``#/$defs/...``, ``#/definitions/...``).
"""

from __future__ import annotations

from typing import Any

_MAX_DEPTH = 32  # a recursive schema stops here with null


def instance(schema: Any, text: str, root: Any = None, depth: int = 0) -> Any:
    """A value valid against ``schema``; every string is ``text``, cut to the
    schema's ``maxLength`` and padded to its ``minLength``."""
    root = schema if root is None else root
    if not isinstance(schema, dict) or depth > _MAX_DEPTH:
        return None
    if "$ref" in schema:
        return instance(_resolve(schema["$ref"], root), text, root, depth + 1)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("anyOf", "oneOf"):
        if schema.get(key):
            options = [o for o in schema[key] if not (isinstance(o, dict) and o.get("type") == "null")]
            return instance((options or schema[key])[0], text, root, depth + 1)
    if schema.get("allOf"):
        merged: dict[str, Any] = {}
        for part in schema["allOf"]:
            part = _resolve(part["$ref"], root) if isinstance(part, dict) and "$ref" in part else part
            merged.update(part if isinstance(part, dict) else {})
        return instance(merged, text, root, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None:
        kind = "object" if "properties" in schema else "string"
    if kind == "object":
        properties = schema.get("properties") or {}
        return {name: instance(sub, text, root, depth + 1) for name, sub in properties.items()}
    if kind == "array":
        count = max(int(schema.get("minItems", 1)), 0)
        if "maxItems" in schema:
            count = min(count, int(schema["maxItems"]))
        return [instance(schema.get("items") or {}, text, root, depth + 1) for _ in range(count)]
    if kind in ("integer", "number"):
        value = max(0, schema.get("minimum", 0))
        if "exclusiveMinimum" in schema:
            value = max(value, schema["exclusiveMinimum"] + 1)
        value = min(value, schema.get("maximum", value), schema.get("exclusiveMaximum", value + 2) - 1)
        return int(value) if kind == "integer" else value
    if kind == "boolean":
        return False
    if kind == "null":
        return None
    return _string(schema, text)


def _string(schema: dict[str, Any], text: str) -> str:
    if schema.get("format") == "date-time":
        return "1970-01-01T00:00:00Z"
    if schema.get("format") == "date":
        return "1970-01-01"
    value = text[: int(schema["maxLength"])] if "maxLength" in schema else text
    return value.ljust(int(schema.get("minLength", 0)), ".")


def _resolve(reference: str, root: Any) -> Any:
    node = root
    for part in reference.removeprefix("#/").split("/"):
        if not isinstance(node, dict):
            return {}
        node = node.get(part.replace("~1", "/").replace("~0", "~"), {})
    return node
