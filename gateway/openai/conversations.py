"""OpenAI ``/v1/conversations`` and their items, mapped onto agentapi's
conversations (ConversationService) and the messages of their sessions.

A conversation's items are the messages of all its sessions, session by
session in creation order, each converted as a response's items are
(gateway/openai/responses_convert.py), without the copies a session holds of
earlier sessions (carried-forward history and forks name their original in
``metadata``), and without a response's ``instructions``. Each item carries
``response_id``, the response that produced it (agentapi's addition: OpenAI's
items do not say). Tenant isolation is the server's: another tenant's
conversation is NOT_FOUND.
"""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf import field_mask_pb2, json_format
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from agentapi import v1 as pb
from gateway.bridge import Bridge, call_metadata
from gateway.errors import ApiError, bad_request, error_response, from_rpc_error
from gateway.openai import responses_convert as convert
from gateway.openai import responses_ids as ids
from gateway.openai import responses_request as request_convert
from gateway.openai.responses import page
from gateway.openai.responses_schema import ConversationRequest, ItemsRequest
from gateway.openai.responses_state import all_messages, live_conversation

COPY_MARKERS = ("carried_from", "forked_from")


def conversation_object(conversation: pb.Conversation) -> dict[str, Any]:
    """OpenAI's ``conversation`` object."""
    metadata = json_format.MessageToDict(conversation.metadata) if conversation.HasField("metadata") else {}
    return {
        "id": ids.conversation_id(conversation.id),
        "object": "conversation",
        "created_at": conversation.create_time.seconds,
        "metadata": {k: v if isinstance(v, str) else str(v) for k, v in metadata.items()},
    }


def _is_copy(message: pb.Message) -> bool:
    return message.HasField("metadata") and any(m in message.metadata.fields for m in COPY_MARKERS)


async def conversation_items(bridge: Bridge, request: Request, conversation_uuid: str) -> list[dict[str, Any]]:
    """Every item of a conversation, oldest first, each with its ``response_id``."""
    metadata = call_metadata(request)
    sessions: list[pb.Session] = []
    token = ""
    while True:
        listed = await bridge.sessions.ListSessions(
            pb.ListSessionsRequest(conversation_id=conversation_uuid, page_size=100, page_token=token),
            metadata=metadata,
        )
        sessions.extend(listed.sessions)
        token = listed.next_page_token
        if not token:
            break
    items: list[dict[str, Any]] = []
    for session in sessions:
        rows = await all_messages(bridge, request, session.id)
        calls = convert.tool_calls_by_id(rows)
        for inputs, outputs in convert.turns(rows):
            reply = outputs[-1]
            if _is_copy(reply) or reply.HasField("purge_time"):
                continue
            response_id = ids.response_id(session.id, outputs[0].id)
            turn_items = [i for row in inputs if not convert.is_instructions(row) for i in convert.input_item(row)]
            turn_items += convert.turn_output_items((inputs, outputs), calls)
            items.extend({**item, "response_id": response_id} for item in turn_items)
    return items


def _conversation_uuid(request: Request) -> str:
    return ids.parse_conversation_id(request.path_params["conversation_id"])


def _refuse_items(body: ConversationRequest | ItemsRequest) -> None:
    if getattr(body, "items", None):
        # Items become messages only through a turn on this server (agentapi
        # stores a message with the turn that read it).
        raise bad_request("adding items without a response is not available on this server yet", "items")


async def _call(request: Request, handler: Any) -> Response:
    try:
        return await handler(request.app.state.bridge)
    except ApiError as exc:
        return error_response(exc)
    except grpc.aio.AioRpcError as exc:
        if exc.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT) and "conversation_id" in (
            request.path_params
        ):
            return error_response(ids.not_found("conversation", request.path_params["conversation_id"]))
        return error_response(from_rpc_error(exc))


async def create_conversation(request: Request) -> Response:
    """``POST /v1/conversations``."""

    async def run(bridge: Bridge) -> Response:
        body: ConversationRequest = request_convert.parse(ConversationRequest, await request.body() or b"{}")
        _refuse_items(body)
        conversation = pb.Conversation()
        conversation.metadata.update(body.metadata or {})
        created = await bridge.conversations.CreateConversation(
            pb.CreateConversationRequest(conversation=conversation), metadata=call_metadata(request)
        )
        return JSONResponse(conversation_object(created.conversation))

    return await _call(request, run)


async def get_conversation(request: Request) -> Response:
    """``GET /v1/conversations/{id}``."""

    async def run(bridge: Bridge) -> Response:
        ref = request.path_params["conversation_id"]
        return JSONResponse(
            conversation_object(await live_conversation(bridge, request, _conversation_uuid(request), ref))
        )

    return await _call(request, run)


async def update_conversation(request: Request) -> Response:
    """``POST /v1/conversations/{id}``: replaces ``metadata``."""

    async def run(bridge: Bridge) -> Response:
        body: ConversationRequest = request_convert.parse(ConversationRequest, await request.body() or b"{}")
        _refuse_items(body)
        conversation = pb.Conversation(id=_conversation_uuid(request))
        await live_conversation(bridge, request, conversation.id, request.path_params["conversation_id"])
        conversation.metadata.update(body.metadata or {})
        updated = await bridge.conversations.UpdateConversation(
            pb.UpdateConversationRequest(
                conversation=conversation, update_mask=field_mask_pb2.FieldMask(paths=["metadata"])
            ),
            metadata=call_metadata(request),
        )
        return JSONResponse(conversation_object(updated.conversation))

    return await _call(request, run)


async def delete_conversation(request: Request) -> Response:
    """``DELETE /v1/conversations/{id}``."""

    async def run(bridge: Bridge) -> Response:
        await live_conversation(bridge, request, _conversation_uuid(request), request.path_params["conversation_id"])
        await bridge.conversations.DeleteConversation(
            pb.DeleteConversationRequest(conversation_id=_conversation_uuid(request)), metadata=call_metadata(request)
        )
        return JSONResponse(
            {"id": request.path_params["conversation_id"], "object": "conversation.deleted", "deleted": True}
        )

    return await _call(request, run)


async def _items(bridge: Bridge, request: Request) -> list[dict[str, Any]]:
    conversation_uuid = _conversation_uuid(request)
    await live_conversation(bridge, request, conversation_uuid, request.path_params["conversation_id"])
    return await conversation_items(bridge, request, conversation_uuid)


async def list_items(request: Request) -> Response:
    """``GET /v1/conversations/{id}/items``: cursor paging (``after``, ``limit``, ``order``)."""

    async def run(bridge: Bridge) -> Response:
        return JSONResponse(page(await _items(bridge, request), request))

    return await _call(request, run)


async def create_items(request: Request) -> Response:
    """``POST /v1/conversations/{id}/items``: validated, then refused (see :func:`_refuse_items`)."""

    async def run(bridge: Bridge) -> Response:
        _conversation_uuid(request)
        body: ItemsRequest = request_convert.parse(ItemsRequest, await request.body())
        _refuse_items(body)
        return JSONResponse({})  # unreachable: an ItemsRequest has at least one item

    return await _call(request, run)


async def get_item(request: Request) -> Response:
    """``GET /v1/conversations/{id}/items/{item_id}``."""

    async def run(bridge: Bridge) -> Response:
        item_id = request.path_params["item_id"]
        item = next((i for i in await _items(bridge, request) if i["id"] == item_id), None)
        if item is None:
            raise ids.not_found("item", item_id)
        return JSONResponse(item)

    return await _call(request, run)


async def delete_item(request: Request) -> Response:
    """``DELETE /v1/conversations/{id}/items/{item_id}``: hides the item's
    message (DeleteMessage), and answers the conversation."""

    async def run(bridge: Bridge) -> Response:
        item_id = request.path_params["item_id"]
        conversation_uuid = _conversation_uuid(request)
        item = next((i for i in await _items(bridge, request) if i["id"] == item_id), None)
        if item is None:
            raise ids.not_found("item", item_id)
        session_id, _ = ids.parse_response_id(item["response_id"])
        rows = await all_messages(bridge, request, session_id)
        row = next((r for r in rows if item_id in _row_item_ids(r, rows)), None)
        if row is None:
            raise ids.not_found("item", item_id)
        await bridge.sessions.DeleteMessage(
            pb.DeleteMessageRequest(session_id=session_id, message_id=row.id), metadata=call_metadata(request)
        )
        got = await live_conversation(bridge, request, conversation_uuid, request.path_params["conversation_id"])
        return JSONResponse(conversation_object(got))

    return await _call(request, run)


def _row_item_ids(row: pb.Message, rows: list[pb.Message]) -> set[str]:
    """The ids of the items one stored message shows as."""
    if row.step == 0:
        return {item["id"] for item in convert.input_item(row)}
    for _, outputs in convert.turns(rows):
        if any(r.id == row.id for r in outputs):
            reply = outputs[0].id
            calls = convert.tool_calls_by_id(rows)
            mine = convert.output_items([r for r in outputs if r.sequence <= row.sequence], reply, calls)
            before = convert.output_items([r for r in outputs if r.sequence < row.sequence], reply, calls)
            return {item["id"] for item in mine} - {item["id"] for item in before}
    return set()


def routes() -> list[Route]:
    """The conversation routes."""
    return [
        Route("/v1/conversations", create_conversation, methods=["POST"]),
        Route("/v1/conversations/{conversation_id}", get_conversation, methods=["GET"]),
        Route("/v1/conversations/{conversation_id}", update_conversation, methods=["POST"]),
        Route("/v1/conversations/{conversation_id}", delete_conversation, methods=["DELETE"]),
        Route("/v1/conversations/{conversation_id}/items", list_items, methods=["GET"]),
        Route("/v1/conversations/{conversation_id}/items", create_items, methods=["POST"]),
        Route("/v1/conversations/{conversation_id}/items/{item_id}", get_item, methods=["GET"]),
        Route("/v1/conversations/{conversation_id}/items/{item_id}", delete_item, methods=["DELETE"]),
    ]
