"""The OpenAPI paths of ``/v1/responses`` and ``/v1/conversations``, merged into
``/openapi.json`` with the other OpenAI paths (gateway/openai/openapi.py). The
request schemas are pydantic's JSON Schema of the models that validate the
bodies (gateway/openai/responses_schema.py)."""

from __future__ import annotations

import functools
from typing import Any

from gateway.openai.responses_schema import ConversationRequest, ItemsRequest, ResponseRequest

PREFIX = "openai."
_ERROR = {"description": "Error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
_OBJECT = {"description": "OK", "content": {"application/json": {"schema": {"type": "object"}}}}
_ID = {"type": "string", "minLength": 1, "maxLength": 100}


@functools.cache
def components() -> dict[str, Any]:
    """The request schemas and their parts."""
    found: dict[str, Any] = {}
    for model in (ResponseRequest, ItemsRequest, ConversationRequest):
        schema = model.model_json_schema(ref_template=f"#/components/schemas/{PREFIX}{{model}}")
        found.update({f"{PREFIX}{name}": value for name, value in schema.pop("$defs", {}).items()})
        found[f"{PREFIX}{model.__name__}"] = schema
    return found


def _operation(name: str, summary: str, body: str | None = None, params: tuple[str, ...] = (), query=()) -> dict:
    operation: dict[str, Any] = {
        "operationId": f"OpenAI_{name}",
        "summary": summary,
        "tags": ["OpenAI"],
        "parameters": [{"name": p, "in": "path", "required": True, "schema": _ID} for p in params]
        + [{"name": q, "in": "query", "required": False, "schema": s} for q, s in query],
        "responses": {"200": _OBJECT, "default": _ERROR},
    }
    if body is not None:
        ref = {"$ref": f"#/components/schemas/{PREFIX}{body}"}
        operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": ref}}}
    if name == "CreateResponse":
        operation["responses"]["200"] = {
            "description": "A `response`, or with `stream: true` server-sent Responses events ending in "
            "`data: [DONE]`.",
            "content": {"application/json": {"schema": {"type": "object"}}, "text/event-stream": {"schema": {}}},
        }
    return operation


_PAGE = (
    ("after", {"type": "string"}),
    ("limit", {"type": "integer", "minimum": 1, "maximum": 100}),
    ("order", {"enum": ["asc", "desc"]}),
)


def paths() -> dict[str, Any]:
    """The path items of the Responses and Conversations APIs."""
    response = ("response_id",)
    conversation = ("conversation_id",)
    item = ("conversation_id", "item_id")
    return {
        "/v1/responses": {
            "post": _operation("CreateResponse", "OpenAI Responses: one agentapi turn", "ResponseRequest")
        },
        "/v1/responses/input_tokens": {
            "post": _operation("CountResponseInputTokens", "An estimate of a request's input tokens", "ResponseRequest")
        },
        "/v1/responses/{response_id}": {
            "get": _operation(
                "GetResponse",
                "A stored response; `stream=true` replays its events after `starting_after`",
                params=response,
                query=(("stream", {"type": "boolean"}), ("starting_after", {"type": "integer"})),
            ),
            "delete": _operation("DeleteResponse", "Deletes a response's messages", params=response),
        },
        "/v1/responses/{response_id}/cancel": {
            "post": _operation("CancelResponse", "Cancels a running response (CancelTurn)", params=response)
        },
        "/v1/responses/{response_id}/input_items": {
            "get": _operation("ListResponseInputItems", "A response's input items", params=response, query=_PAGE)
        },
        "/v1/conversations": {
            "post": _operation("CreateConversation", "Creates a conversation", "ConversationRequest")
        },
        "/v1/conversations/{conversation_id}": {
            "get": _operation("GetConversation", "A conversation", params=conversation),
            "post": _operation(
                "UpdateConversation", "Replaces a conversation's metadata", "ConversationRequest", conversation
            ),
            "delete": _operation("DeleteConversation", "Deletes a conversation", params=conversation),
        },
        "/v1/conversations/{conversation_id}/items": {
            "get": _operation(
                "ListConversationItems", "A conversation's items, with `response_id`", params=conversation, query=_PAGE
            ),
            "post": _operation("CreateConversationItems", "Adds items (up to 20)", "ItemsRequest", conversation),
        },
        "/v1/conversations/{conversation_id}/items/{item_id}": {
            "get": _operation("GetConversationItem", "One item", params=item),
            "delete": _operation("DeleteConversationItem", "Deletes an item's message", params=item),
        },
    }
