"""Where a response lives: a session's messages and turns, the turn of a
``resp_`` id, the session a new response runs in (``previous_response_id``,
``conversation`` or a new one), and what a finished turn leaves behind."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import grpc
from starlette.requests import Request
from tenacity import AsyncRetrying, retry_if_exception, stop_after_delay, wait_exponential

from agentapi import v1 as pb
from gateway.bridge import Bridge, call_metadata
from gateway.errors import bad_request
from gateway.openai import responses_convert as convert
from gateway.openai import responses_ids as ids
from gateway.openai.chat import session_idempotency_key
from gateway.openai.responses_schema import McpTool, ResponseRequest

log = logging.getLogger(__name__)

PAGE_SIZE = 100


async def all_messages(bridge: Bridge, request: Request, session_id: str) -> list[pb.Message]:
    """Every message of a session, deleted ones included, in order (turns are
    told apart with them: gateway/openai/responses_convert.py ``turns``)."""
    messages: list[pb.Message] = []
    token = ""
    while True:
        page = await bridge.sessions.ListMessages(
            pb.ListMessagesRequest(session_id=session_id, page_size=PAGE_SIZE, page_token=token, show_deleted=True),
            metadata=call_metadata(request),
        )
        messages.extend(page.messages)
        token = page.next_page_token
        if not token:
            return messages


async def live_conversation(bridge: Bridge, request: Request, conversation_uuid: str, ref: str) -> pb.Conversation:
    """The conversation, unless deleted (DeleteConversation keeps it, AIP-164:
    to OpenAI callers a deleted conversation is gone). Raises a 404 :class:`ApiError`."""
    try:
        got = await bridge.conversations.GetConversation(
            pb.GetConversationRequest(conversation_id=conversation_uuid), metadata=call_metadata(request)
        )
    except grpc.aio.AioRpcError as exc:
        if exc.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
            raise ids.not_found("conversation", ref) from None
        raise
    if got.conversation.HasField("delete_time"):
        raise ids.not_found("conversation", ref)
    return got.conversation


async def find_turn(
    bridge: Bridge, request: Request, response_id: str, code: str | None = None
) -> tuple[str, list[tuple[list[pb.Message], list[pb.Message]]], int]:
    """(session id, the session's turns, the index of the response's turn).
    Raises a 404 :class:`ApiError` (``code``) for an unknown, deleted or
    unstored (``store: false``) response."""
    session_id, reply_id = ids.parse_response_id(response_id, code)
    try:
        turns = convert.turns(await all_messages(bridge, request, session_id))
    except grpc.aio.AioRpcError as exc:
        if exc.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
            raise ids.not_found("response", response_id, code) from None
        raise
    for index, (_, outputs) in enumerate(turns):
        if outputs[0].id == reply_id:
            return session_id, turns, index
    raise ids.not_found("response", response_id, code)


def previous(session_id: str, turns: list[Any], index: int) -> str | None:
    return ids.response_id(session_id, turns[index - 1][1][0].id) if index > 0 else None


def stored(session_id: str, turns: list[Any], index: int) -> dict[str, Any]:
    calls = convert.tool_calls_by_id([row for turn in turns[:index] for row in turn[1]])
    return convert.stored_response(session_id, turns[index], previous(session_id, turns, index), calls)


async def hide_instructions(bridge: Bridge, request: Request, session_id: str) -> str:
    """Hides the live ``instructions`` messages of a session a new turn is
    about to continue (a turn that ended on the server, in the background or
    after its caller left, may have left one): OpenAI carries no
    instructions over. Returns ``session_id``."""
    for row in await all_messages(bridge, request, session_id):
        if convert.is_instructions(row) and not row.HasField("delete_time"):
            await bridge.sessions.DeleteMessage(
                pb.DeleteMessageRequest(session_id=session_id, message_id=row.id), metadata=call_metadata(request)
            )
    return session_id


async def latestopen_session(bridge: Bridge, request: Request, conversation_uuid: str) -> pb.Session | None:
    """The conversation's newest session that takes turns, or None."""
    latest, token = None, ""
    while True:
        page = await bridge.sessions.ListSessions(
            pb.ListSessionsRequest(conversation_id=conversation_uuid, page_size=100, page_token=token),
            metadata=call_metadata(request),
        )
        latest = next((s for s in reversed(page.sessions) if s.status != pb.SESSION_STATUS_ENDED), latest)
        token = page.next_page_token
        if not token:
            return latest


async def open_session(
    bridge: Bridge, request: Request, body: ResponseRequest, key: str | None
) -> tuple[str, str | None]:
    """The session the response runs in, and the previous response's id to echo."""
    metadata = call_metadata(request)
    if body.previous_response_id:
        session_id, turns, index = await find_turn(
            bridge, request, body.previous_response_id, "previous_response_not_found"
        )
        if index < len(turns) - 1:
            reply_id = turns[index][1][-1].id  # the fork keeps the whole turn
            fork = await bridge.sessions.ForkSession(
                pb.ForkSessionRequest(session_id=session_id, message_id=reply_id), metadata=metadata
            )
            session_id = fork.session.id
        return await hide_instructions(bridge, request, session_id), body.previous_response_id
    session = pb.Session()
    agent_id = ""
    if body.model and body.model.startswith(convert.AGENT_PREFIX):
        agent = await bridge.agents.GetAgent(
            pb.GetAgentRequest(agent_id=body.model[len(convert.AGENT_PREFIX) :]), metadata=metadata
        )
        agent_id = agent.agent.id
    if body.conversation is not None:
        ref = body.conversation if isinstance(body.conversation, str) else body.conversation.id
        session.conversation_id = ids.parse_conversation_id(ref)
        await live_conversation(bridge, request, session.conversation_id, ref)
        latest = await latestopen_session(bridge, request, session.conversation_id)
        if latest is not None and (not agent_id or latest.agent_id == agent_id):
            return await hide_instructions(bridge, request, latest.id), None
    if not body.model:
        raise bad_request("model is required", "model")
    if agent_id:
        session.agent_id = agent_id
    else:
        session.overrides.model = body.model
    # A keyed request's session is keyed too (a derived key, as chat completions
    # do), so that a retry finds both the same session and the same turn.
    session_metadata = call_metadata(request, None if key is None else session_idempotency_key(key))
    created = await bridge.sessions.CreateSession(
        pb.CreateSessionRequest(session=session, carry_forward_history=bool(session.conversation_id)),
        metadata=session_metadata,
    )
    return created.session.id, None


async def check_mcp_tools(bridge: Bridge, request: Request, body: ResponseRequest) -> None:
    """``mcp`` tools name a registered MCP server by ``server_label`` (its id).
    The servers a run may call are its agent's (AgentMcpServer, with their
    approval modes), so an ``mcp`` tool is accepted when the model is an agent
    that has that server, and refused otherwise; a ``server_url`` (an
    arbitrary server) is always refused. Raises a 400 :class:`ApiError`."""
    tools = [(i, t) for i, t in enumerate(body.tools or ()) if isinstance(t, McpTool)]
    if not tools:
        return
    servers: set[str] = set()
    if body.model and body.model.startswith(convert.AGENT_PREFIX):
        agent = await bridge.agents.GetAgent(
            pb.GetAgentRequest(agent_id=body.model[len(convert.AGENT_PREFIX) :]), metadata=call_metadata(request)
        )
        servers = {entry.server_id for entry in agent.agent.mcp_servers}
    for index, tool in tools:
        if tool.server_url:
            raise bad_request(
                "mcp tools must name a registered MCP server by server_label; server_url is not allowed",
                f"tools[{index}].server_url",
            )
        if tool.server_label not in servers:
            raise bad_request(
                f"no MCP server {tool.server_label!r} for this model: mcp tools name an MCP server of the agent "
                "given as model (agent:<key>)",
                f"tools[{index}].server_label",
            )


async def after_turn(bridge: Bridge, request: Request, session_id: str, turn_id: str, store: bool) -> None:
    """What a finished turn leaves. ``store: false``: nothing but its usage
    (EraseTurn). Else its ``instructions`` message is hidden (DeleteMessage),
    so later turns do not see it, as OpenAI does not carry instructions over;
    it still shows as the response's ``instructions``."""
    metadata = call_metadata(request)
    if not store:
        await bridge.sessions.EraseTurn(
            pb.EraseTurnRequest(session_id=session_id, message_id=turn_id), metadata=metadata
        )
        return
    turn = next(
        (t for t in convert.turns(await all_messages(bridge, request, session_id)) if t[1][0].id == turn_id), None
    )
    for row in turn[0] if turn else ():
        if convert.is_instructions(row) and not row.HasField("delete_time"):
            await bridge.sessions.DeleteMessage(
                pb.DeleteMessageRequest(session_id=session_id, message_id=row.id), metadata=metadata
            )


# What a turn left behind is tidied within this long of its caller leaving
# (the cancelled turn must reach its terminal write first: SESSION_BUSY until then).
TIDY_WITHIN_S = 60.0
_tidying: set[asyncio.Task[None]] = set()


def _busy(exc: BaseException) -> bool:
    return isinstance(exc, grpc.aio.AioRpcError) and exc.code() in (
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.UNAVAILABLE,
    )


def tidy_later(bridge: Bridge, request: Request, session_id: str, turn_id: str, store: bool) -> None:
    """Runs :func:`after_turn` in a task of its own, retried while the turn
    still holds its session: a streaming caller that leaves mid-turn cancels
    the turn, and a ``store: false`` turn must still be erased (and a stored
    one's instructions hidden) once it has stored its end."""

    async def tidy() -> None:
        try:
            retrying = AsyncRetrying(
                retry=retry_if_exception(_busy),
                stop=stop_after_delay(TIDY_WITHIN_S),
                wait=wait_exponential(multiplier=0.05, max=2.0),
                reraise=True,
            )
            async for attempt in retrying:
                with attempt:
                    await after_turn(bridge, request, session_id, turn_id, store)
        except Exception:
            log.warning("could not tidy turn %s after its caller left (store=%s)", turn_id, store, exc_info=True)

    task = asyncio.create_task(tidy(), name=f"agentapi-tidy-{turn_id}")
    _tidying.add(task)
    task.add_done_callback(_tidying.discard)
