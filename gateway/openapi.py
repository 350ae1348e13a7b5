"""OpenAPI 3.1 of the REST mapping, generated from the same descriptors and
``google.api.http`` bindings that gateway/transcode.py serves, so the document
cannot drift from the routes, plus the OpenAI surface and the health
endpoints (gateway/openai/openapi.py). Served at ``GET /openapi.json``.

The runtime descriptors carry no source info, so operations and schemas have
no descriptions from the proto comments.
"""

from __future__ import annotations

import functools
from typing import Any

from google.api import field_behavior_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from starlette.requests import Request
from starlette.responses import JSONResponse

from gateway import transcode
from gateway.openai import openapi as openai_paths
from gateway.openai import responses_openapi

T = FieldDescriptor
SCALARS: dict[int, dict[str, Any]] = {
    T.TYPE_DOUBLE: {"type": "number", "format": "double"},
    T.TYPE_FLOAT: {"type": "number", "format": "float"},
    # The protobuf JSON mapping writes 64-bit integers as strings.
    **{t: {"type": "string", "format": "int64"} for t in (T.TYPE_INT64, T.TYPE_SINT64, T.TYPE_SFIXED64)},
    **{t: {"type": "string", "format": "uint64"} for t in (T.TYPE_UINT64, T.TYPE_FIXED64)},
    **{t: {"type": "integer", "format": "int32"} for t in (T.TYPE_INT32, T.TYPE_SINT32, T.TYPE_SFIXED32)},
    **{t: {"type": "integer", "format": "uint32"} for t in (T.TYPE_UINT32, T.TYPE_FIXED32)},
    T.TYPE_BOOL: {"type": "boolean"},
    T.TYPE_STRING: {"type": "string"},
    T.TYPE_BYTES: {"type": "string", "format": "byte"},
}
WELL_KNOWN: dict[str, dict[str, Any]] = {
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    "google.protobuf.Duration": {"type": "string", "pattern": r"^-?[0-9]+(\.[0-9]+)?s$"},
    "google.protobuf.FieldMask": {"type": "string", "description": "Comma-separated field paths."},
    "google.protobuf.Struct": {"type": "object"},
    "google.protobuf.Value": {},
    "google.protobuf.ListValue": {"type": "array"},
    "google.protobuf.Empty": {"type": "object"},
    "google.protobuf.Any": {"type": "object", "properties": {"@type": {"type": "string"}}},
    "google.rpc.Status": {"type": "object"},
}
ERROR = {
    "type": "object",
    "properties": {
        "error": {
            "type": "object",
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]},
                "reason": {"type": ["string", "null"], "description": "agentapi's ErrorInfo reason."},
            },
        }
    },
}


def _behaviors(field: FieldDescriptor) -> list[int]:
    return list(field.GetOptions().Extensions[field_behavior_pb2.field_behavior])


class _Schemas:
    """Collects component schemas for the messages that operations reach."""

    def __init__(self) -> None:
        self.components: dict[str, Any] = {"Error": ERROR}

    def field(self, field: FieldDescriptor) -> dict[str, Any]:
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            return {"type": "object", "additionalProperties": self.field(field.message_type.fields_by_name["value"])}
        if field.enum_type is not None:
            schema = {"type": "string", "enum": [v.name for v in field.enum_type.values]}
        elif field.message_type is not None:
            schema = self.message(field.message_type)
        else:
            schema = dict(SCALARS[field.type])
        if field.is_repeated:
            schema = {"type": "array", "items": schema}
        if field_behavior_pb2.OUTPUT_ONLY in _behaviors(field):
            schema["readOnly"] = True
        return schema

    def message(self, message: Descriptor) -> dict[str, Any]:
        if message.full_name in WELL_KNOWN:
            return dict(WELL_KNOWN[message.full_name])
        if message.full_name in transcode.SCALAR_MESSAGES:  # wrappers: their JSON is their value's
            return self.field(message.fields_by_name["value"])
        if message.full_name not in self.components:
            self.components[message.full_name] = {}  # reserved first: messages may be recursive
            self.components[message.full_name] = self.object(message)
        return {"$ref": f"#/components/schemas/{message.full_name}"}

    def object(self, message: Descriptor, skip: tuple[str, ...] = ()) -> dict[str, Any]:
        fields = [f for f in message.fields if f.name not in skip]
        schema: dict[str, Any] = {"type": "object", "properties": {f.json_name: self.field(f) for f in fields}}
        required = [f.json_name for f in fields if field_behavior_pb2.REQUIRED in _behaviors(f)]
        return {**schema, "required": required} if required else schema


def _query_parameters(
    binding: transcode.Binding, schemas: _Schemas, message: Descriptor | None = None, prefix: str = ""
) -> list[dict[str, Any]]:
    """The fields a query string can set, flattened with dots as the transcoder reads them."""
    message = message or binding.method.input_type
    out: list[dict[str, Any]] = []
    for field in message.fields:
        path = f"{prefix}{field.name}"
        if path in binding.variables or binding.body in ("*", path):
            continue
        try:
            fields = transcode.resolve(binding.method.input_type, path)
        except KeyError:
            nested = field.message_type
            if nested and not field.is_repeated and not nested.full_name.startswith("google.") and path.count(".") < 3:
                out += _query_parameters(binding, schemas, nested, f"{path}.")  # the depth bound stops recursion
            continue
        out.append({"name": ".".join(f.json_name for f in fields), "in": "query", "schema": schemas.field(field)})
    return out


def _operation(binding: transcode.Binding, schemas: _Schemas, names: tuple[str, ...], suffix: str) -> dict[str, Any]:
    method, request = binding.method, binding.method.input_type
    parameters = [
        {
            "name": name,
            "in": "path",
            "required": True,
            "description": f"Sets `{variable}`.",
            "schema": schemas.field(transcode.resolve(request, variable)[-1]),
        }
        for name, variable in zip(names, binding.variables, strict=True)
    ]
    operation: dict[str, Any] = {
        "operationId": f"{binding.service.name}_{method.name}{suffix}",
        "summary": method.name,
        "tags": [binding.service.name],
        "parameters": parameters + _query_parameters(binding, schemas),
    }
    if binding.body:
        body = (
            schemas.object(request, skip=binding.variables)
            if binding.body == "*"
            else schemas.field(request.fields_by_name[binding.body])
        )
        operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    reply = schemas.message(method.output_type)
    if method.server_streaming:
        content = {"text/event-stream": {"schema": reply}}
        description = "Server-sent events: each `data:` line is one message; a failure is one `event: error`."
    else:
        content, description = {"application/json": {"schema": reply}}, "OK"
    error = {
        "description": "Error",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }
    operation["responses"] = {"200": {"description": description, "content": content}, "default": error}
    return operation


@functools.cache
def document() -> dict[str, Any]:
    """The OpenAPI 3.1 document (a JSON-ready dict) for every served binding."""
    schemas = _Schemas()
    paths: dict[str, dict[str, Any]] = {}
    seen: dict[str, int] = {}
    shapes: dict[str, tuple[str, ...]] = {}
    for binding in transcode.scan()[0]:
        count = seen[binding.rpc] = seen.get(binding.rpc, 0) + 1
        # OpenAPI forbids two paths that differ only in variable names (/a/{a_id}, /a/{a.id}): the first wins.
        shape = transcode.VARIABLE.sub("{}", binding.template)
        names = shapes.setdefault(shape, binding.variables)
        path = shape.format(*(f"{{{name}}}" for name in names))
        operation = _operation(binding, schemas, names, str(count) if count > 1 else "")
        paths.setdefault(path, {})[binding.verb.lower()] = operation
    for module in (openai_paths, responses_openapi):
        for path, item in module.paths().items():
            paths.setdefault(path, {}).update(item)  # the OpenAI routes win on a shared path, as in the app
        schemas.components.update(module.components())
    return {
        "openapi": "3.1.0",
        "info": {"title": "agentapi", "version": "v1"},
        "paths": paths,
        "components": {
            "schemas": schemas.components,
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearerAuth": []}],
    }


async def openapi_json(request: Request) -> JSONResponse:
    """``GET /openapi.json``: the document; needs no key."""
    return JSONResponse(document())
