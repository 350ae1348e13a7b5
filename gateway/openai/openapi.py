"""The OpenAPI paths of the OpenAI surface and the health endpoints, merged into
``/openapi.json`` by gateway/openapi.py. The chat-completions request schema is
pydantic's JSON Schema of the very models that validate the body
(gateway/openai/chat_schema.py), so the document and the validation agree."""

from __future__ import annotations

import functools
from typing import Any

from gateway.openai.chat_schema import ChatCompletionRequest

PREFIX = "openai."
ERROR = {"$ref": "#/components/schemas/Error"}
_ERROR_RESPONSE = {"description": "Error", "content": {"application/json": {"schema": ERROR}}}
SESSION_HEADER = {
    "name": "X-Session-Id",
    "in": "header",
    "required": False,
    "description": "Continue this stored session: only the messages after its last reply are new, and "
    "`model` and `tools` apply to this turn. Every response names its session in the same header.",
    "schema": {"type": "string", "format": "uuid"},
}
IDEMPOTENCY_HEADER = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "1 to 255 printable ASCII characters: a retry with the same key and body replays the "
    "stored turn (same id) instead of running it again; 409 while the first runs, 422 for another body.",
    "schema": {"type": "string", "minLength": 1, "maxLength": 255},
}
REQUEST_ID_HEADER = {
    "name": "X-Request-Id",
    "in": "header",
    "required": False,
    "description": "Echoed in the response's `x-request-id` (else one is generated) and logged with the request.",
    "schema": {"type": "string", "maxLength": 128},
}
MODEL = {
    "type": "object",
    "required": ["id", "object", "created", "owned_by"],
    "properties": {
        "id": {"type": "string", "description": "An upstream model id, or `agent:<key>` for an agent."},
        "object": {"const": "model"},
        "created": {"type": "integer", "description": "Unix seconds; 0 for upstream models."},
        "owned_by": {"type": "string"},
    },
}
STATUS = {"type": "object", "properties": {"status": {"type": "string"}}}


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


@functools.cache
def components() -> dict[str, Any]:
    """Component schemas: the chat-completions request and its parts, and Model."""
    schema = ChatCompletionRequest.model_json_schema(ref_template=f"#/components/schemas/{PREFIX}{{model}}")
    found = {f"{PREFIX}{name}": value for name, value in schema.pop("$defs", {}).items()}
    found[f"{PREFIX}ChatCompletionRequest"] = schema
    found[f"{PREFIX}Model"] = MODEL
    return found


def paths() -> dict[str, Any]:
    """The path items of ``/v1/chat/completions``, ``/v1/models``, ``/v1/models/{model}``,
    ``/healthz`` and ``/readyz``."""
    chat = {
        "operationId": "OpenAI_CreateChatCompletion",
        "summary": "OpenAI chat completions, stored as a session turn",
        "tags": ["OpenAI"],
        "parameters": [SESSION_HEADER, IDEMPOTENCY_HEADER, REQUEST_ID_HEADER],
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": f"#/components/schemas/{PREFIX}ChatCompletionRequest"}}
            },
        },
        "responses": {
            "200": {
                "description": "A `chat.completion`, or with `stream: true` server-sent `chat.completion.chunk` "
                "events ending in `data: [DONE]`.",
                "headers": {"X-Session-Id": {"schema": {"type": "string"}, "description": "The stored session."}},
                "content": {
                    "application/json": {"schema": {"type": "object"}},
                    "text/event-stream": {"schema": {"type": "string"}},
                },
            },
            "413": {**_ERROR_RESPONSE, "description": "The body is over AGENTAPI_MAX_REQUEST_BYTES."},
            "default": _ERROR_RESPONSE,
        },
    }
    model_ref = {"$ref": f"#/components/schemas/{PREFIX}Model"}
    listing = {
        "operationId": "OpenAI_ListModels",
        "summary": "Upstream models, then every agent as `agent:<key>`",
        "tags": ["OpenAI"],
        "responses": {
            "200": _json(
                {
                    "type": "object",
                    "properties": {"object": {"const": "list"}, "data": {"type": "array", "items": model_ref}},
                }
            ),
            "default": _ERROR_RESPONSE,
        },
    }
    retrieve = {
        "operationId": "OpenAI_RetrieveModel",
        "summary": "One model or agent; 404 `model_not_found` otherwise",
        "tags": ["OpenAI"],
        "parameters": [{"name": "model", "in": "path", "required": True, "schema": {"type": "string"}}],
        "responses": {"200": _json(model_ref), "default": _ERROR_RESPONSE},
    }
    healthz = {
        "operationId": "Bridge_Healthz",
        "summary": "Liveness of the bridge",
        "tags": ["Health"],
        "security": [],
        "responses": {"200": _json(STATUS)},
    }
    readyz = {
        "operationId": "Bridge_Readyz",
        "summary": 'Readiness: the gRPC server\'s health (service "") is SERVING',
        "tags": ["Health"],
        "security": [],
        "responses": {"200": _json(STATUS), "503": _json(STATUS, "Not serving, or unreachable")},
    }
    return {
        "/v1/chat/completions": {"post": chat},
        "/v1/models": {"get": listing},
        "/v1/models/{model}": {"get": retrieve},
        "/healthz": {"get": healthz},
        "/readyz": {"get": readyz},
    }
