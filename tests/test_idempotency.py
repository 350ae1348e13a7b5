"""Durable idempotency keys: replay, in flight, mismatch, release, retention;
over gRPC, over the bridge (openai SDK and transcoded routes), under a retry
storm, across two agentapi processes sharing one database, and after a restart.
Everything runs against the real servers, the real LiteLLM proxy (the ``stack``
fixture) and the scripted upstream."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from typing import Any

import grpc
import openai
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from agentapi import v1 as pb
from tests.helpers import all_messages, create_agent, create_session, error_reason, user
from tests.stack import AUTH, Stack, start_stack
from tests.support.upstream import ScriptedUpstream


def keyed(key: str) -> tuple[tuple[str, str], ...]:
    return (*AUTH, ("idempotency-key", key))


def new_key() -> str:
    return f"key-{uuid.uuid4()}"


def upstream_calls(upstream: ScriptedUpstream, marker: str) -> int:
    """How many chat completions reached the upstream with ``marker`` in the last user message."""
    return sum(
        1
        for r in upstream.requests
        if r["path"].endswith("/chat/completions")
        and marker in str([m.get("content") for m in r["body"]["messages"] if m.get("role") == "user"][-1:])
    )


async def stream(stack: Stack, session_id: str, content: str, key: str) -> list[pb.SendStreamingMessageResponse]:
    call = stack.sessions.SendStreamingMessage(
        pb.SendStreamingMessageRequest(session_id=session_id, messages=[user(content)]), metadata=keyed(key)
    )
    return [event async for event in call]


async def rows(url: str, sql: str, **params: Any) -> list[Any]:
    """Reads the database directly, as an operator would."""
    engine = create_async_engine(url)
    try:
        async with engine.connect() as connection:
            return list((await connection.execute(text(sql), params)).all())
    finally:
        await engine.dispose()


async def test_unary_replay_returns_the_stored_turn_without_calling_the_upstream(
    stack: Stack, key: str, upstream: ScriptedUpstream
) -> None:
    session = await create_session(stack, (await create_agent(stack, key)).id)
    marker, idem = uuid.uuid4().hex, new_key()
    request = pb.SendMessageRequest(session_id=session.id, messages=[user(f"once {marker}")])
    first = await stack.sessions.SendMessage(request, metadata=keyed(idem))
    again = await stack.sessions.SendMessage(request, metadata=keyed(idem))
    assert again == first
    assert first.message.status == pb.MESSAGE_STATUS_COMPLETED and first.message.id
    assert upstream_calls(upstream, marker) == 1
    assert len(await all_messages(stack, session.id)) == 2


async def test_streamed_replay_streams_the_stored_turn_with_coalesced_deltas(
    stack: Stack, key: str, upstream: ScriptedUpstream
) -> None:
    session = await create_session(stack, (await create_agent(stack, key)).id)
    marker, idem = uuid.uuid4().hex, new_key()
    first = await stream(stack, session.id, f"stream once {marker}", idem)
    again = await stream(stack, session.id, f"stream once {marker}", idem)
    assert [e.WhichOneof("event") for e in again] == ["turn_started", "input_message", "delta", "assistant_message"]
    assert again[0].turn_started == first[0].turn_started, "a replay names the same reply id from its first event"
    assert again[1].input_message == first[1].input_message
    assert again[-1].assistant_message == first[-1].assistant_message
    assert again[2].delta.content == "".join(e.delta.content for e in first if e.HasField("delta"))
    assert again[2].delta.content == first[-1].assistant_message.content
    assert upstream_calls(upstream, marker) == 1
    assert len(await all_messages(stack, session.id)) == 2


async def test_streamed_tool_call_replay_keeps_the_assembled_call(stack: Stack, key: str) -> None:
    session = await create_session(stack, (await create_agent(stack, key)).id)
    idem = new_key()
    content = 'weather please [[tool:get_weather {"city": "Paris"}]]'
    first = await stream(stack, session.id, content, idem)
    again = await stream(stack, session.id, content, idem)
    replayed = again[2].delta.tool_calls
    assert len(replayed) == 1 and replayed[0].name == "get_weather" and replayed[0].id
    assert replayed[0].arguments == first[-1].assistant_message.tool_calls[0].function.arguments
    assert again[-1].assistant_message == first[-1].assistant_message


async def test_same_key_while_running_is_in_flight_then_replays(
    stack: Stack, key: str, upstream: ScriptedUpstream
) -> None:
    session = await create_session(stack, (await create_agent(stack, key)).id)
    marker, idem = uuid.uuid4().hex, new_key()
    content = f"slow {marker} a b c d e [[slow:150]]"
    running = asyncio.create_task(stream(stack, session.id, content, idem))
    while upstream_calls(upstream, marker) == 0:
        await asyncio.sleep(0.01)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stream(stack, session.id, content, idem)
    assert caught.value.code() == grpc.StatusCode.ABORTED
    assert error_reason(caught.value) == "IDEMPOTENCY_REQUEST_IN_FLIGHT"
    first = await running
    again = await stream(stack, session.id, content, idem)
    assert again[-1].assistant_message == first[-1].assistant_message
    assert upstream_calls(upstream, marker) == 1


async def test_same_key_for_another_request_is_rejected(stack: Stack, key: str) -> None:
    session = await create_session(stack, (await create_agent(stack, key)).id)
    idem = new_key()
    await stack.sessions.SendMessage(
        pb.SendMessageRequest(session_id=session.id, messages=[user("first")]), metadata=keyed(idem)
    )
    for call in (
        stack.sessions.SendMessage(
            pb.SendMessageRequest(session_id=session.id, messages=[user("second")]), metadata=keyed(idem)
        ),
        stack.agents.CreateAgent(
            pb.CreateAgentRequest(agent=pb.Agent(key=f"{key}-x", default_model="scripted-a")), metadata=keyed(idem)
        ),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error_reason(caught.value) == "IDEMPOTENCY_KEY_REUSED"
    assert [m.content for m in await all_messages(stack, session.id)][::2] == ["first"]


@pytest.mark.parametrize("bad", ["", "x" * 256, "caf\u00e9", "tab\there"])
async def test_malformed_keys_are_invalid(offline_stack: Stack, bad: str) -> None:
    metadata = (*AUTH, ("idempotency-key", bad))
    try:
        await offline_stack.conversations.CreateConversation(pb.CreateConversationRequest(), metadata=metadata)
    except grpc.aio.AioRpcError as exc:
        assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error_reason(exc) == "IDEMPOTENCY_KEY_INVALID"
    except Exception as exc:  # gRPC itself refuses to send what metadata cannot carry
        assert not bad.isascii() or not bad.isprintable(), exc
    else:
        pytest.fail(f"{bad!r} was accepted")
    ok = await offline_stack.conversations.CreateConversation(
        pb.CreateConversationRequest(), metadata=(*AUTH, ("idempotency-key", "~" * 255))
    )
    assert ok.conversation.id


async def test_create_rpcs_replay_the_created_resource(offline_stack: Stack, key: str) -> None:
    idem = new_key()
    request = pb.CreateAgentRequest(agent=pb.Agent(key=key, default_model="agentapi-offline"))
    first = await offline_stack.agents.CreateAgent(request, metadata=keyed(idem))
    again = await offline_stack.agents.CreateAgent(request, metadata=keyed(idem))
    assert again == first  # not ALREADY_EXISTS: the retry gets the agent it created
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await offline_stack.agents.CreateAgent(request, metadata=keyed(new_key()))
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS
    session_request = pb.CreateSessionRequest(session=pb.Session(agent_id=key))
    s1 = await offline_stack.sessions.CreateSession(session_request, metadata=keyed(idem + "-s"))
    s2 = await offline_stack.sessions.CreateSession(session_request, metadata=keyed(idem + "-s"))
    assert s1.session.id == s2.session.id


async def test_created_api_key_secret_is_not_stored_for_replays(offline_stack: Stack) -> None:
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    await offline_stack.tenants.CreateTenant(pb.CreateTenantRequest(tenant=pb.Tenant(id=tenant)), metadata=AUTH)
    idem = new_key()
    request = pb.CreateApiKeyRequest(api_key=pb.ApiKey(tenant_id=tenant, scope=pb.API_KEY_SCOPE_CLIENT))
    first = await offline_stack.api_keys.CreateApiKey(request, metadata=keyed(idem))
    again = await offline_stack.api_keys.CreateApiKey(request, metadata=keyed(idem))
    assert first.secret and again.secret == ""
    assert again.api_key == first.api_key
    stored = await rows(
        offline_stack.config.database_url, "SELECT response FROM idempotency_records WHERE `key` = :k", k=idem
    )
    assert first.secret.encode() not in stored[0][0]


async def test_failed_turn_is_replayed_not_rerun(stack: Stack, key: str, upstream: ScriptedUpstream) -> None:
    session = await create_session(stack, (await create_agent(stack, key)).id)
    marker, idem = uuid.uuid4().hex, new_key()
    request = pb.SendMessageRequest(session_id=session.id, messages=[user(f"too long {marker} [[error:context]]")])
    codes = []
    for _ in range(2):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stack.sessions.SendMessage(request, metadata=keyed(idem))
        codes.append((caught.value.code(), error_reason(caught.value), caught.value.details()))
    assert codes[0] == codes[1] and codes[0][1] == "CONTEXT_WINDOW_EXCEEDED"
    assert upstream_calls(upstream, marker) == 1
    stored = await all_messages(stack, session.id)
    assert [(m.role, m.status) for m in stored] == [
        (pb.ROLE_USER, pb.MESSAGE_STATUS_COMPLETED),
        (pb.ROLE_ASSISTANT, pb.MESSAGE_STATUS_FAILED),
    ]


async def test_request_that_stored_nothing_releases_its_key(stack: Stack, key: str, upstream: ScriptedUpstream) -> None:
    """A turn refused before anything was stored (here the session is busy with
    another turn) leaves no record, so the same key runs once the session is free."""
    session = await create_session(stack, (await create_agent(stack, key)).id)
    busy_marker, marker, idem = uuid.uuid4().hex, uuid.uuid4().hex, new_key()
    busy = asyncio.create_task(stream(stack, session.id, f"busy {busy_marker} a b c [[slow:200]]", new_key()))
    while upstream_calls(upstream, busy_marker) == 0:
        await asyncio.sleep(0.01)
    request = pb.SendMessageRequest(session_id=session.id, messages=[user(f"later {marker}")])
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stack.sessions.SendMessage(request, metadata=keyed(idem))
    assert error_reason(caught.value) == "SESSION_BUSY"
    await busy
    reply = await stack.sessions.SendMessage(request, metadata=keyed(idem))
    assert reply.message.status == pb.MESSAGE_STATUS_COMPLETED
    assert upstream_calls(upstream, marker) == 1


async def test_bridge_forwards_the_key_on_chat_completions(stack: Stack, upstream: ScriptedUpstream) -> None:
    client = stack.openai()
    marker, idem = uuid.uuid4().hex, new_key()
    messages = [{"role": "user", "content": f"bridge once {marker}"}]
    headers = {"Idempotency-Key": idem}
    first = await client.chat.completions.with_raw_response.create(
        model="scripted-a", messages=messages, extra_headers=headers
    )
    again = await client.chat.completions.with_raw_response.create(
        model="scripted-a", messages=messages, extra_headers=headers
    )
    assert again.headers["x-session-id"] == first.headers["x-session-id"]
    assert again.parse().id == first.parse().id
    assert again.parse().choices[0].message.content == f"Echo: bridge once {marker}"
    assert upstream_calls(upstream, marker) == 1

    chunks = []
    for _ in range(2):
        streamed = await client.chat.completions.create(
            model="scripted-a", messages=messages, stream=True, extra_headers={"Idempotency-Key": idem + "-s"}
        )
        chunks.append([c async for c in streamed])
    texts = ["".join(c.choices[0].delta.content or "" for c in run if c.choices) for run in chunks]
    assert texts[0] == texts[1] == f"Echo: bridge once {marker}"
    assert chunks[0][0].id == chunks[1][0].id
    assert upstream_calls(upstream, marker) == 2  # one per key

    with pytest.raises(openai.UnprocessableEntityError) as reused:
        await client.chat.completions.create(
            model="scripted-a", messages=[{"role": "user", "content": "different"}], extra_headers=headers
        )
    assert reused.value.status_code == 422 and reused.value.body["code"] == "idempotency_key_reused"


async def test_bridge_answers_409_in_flight_and_400_for_a_bad_key(stack: Stack, upstream: ScriptedUpstream) -> None:
    marker, idem = uuid.uuid4().hex, new_key()
    body = {"model": "scripted-a", "messages": [{"role": "user", "content": f"slow {marker} a b c [[slow:200]]"}]}
    async with stack.http() as http:
        running = asyncio.create_task(http.post("/v1/chat/completions", json=body, headers={"Idempotency-Key": idem}))
        while upstream_calls(upstream, marker) == 0:
            await asyncio.sleep(0.01)
        conflict = await http.post("/v1/chat/completions", json=body, headers={"Idempotency-Key": idem})
        assert conflict.status_code == 409, conflict.text
        assert conflict.json()["error"]["code"] == "idempotency_request_in_flight"
        assert (await running).status_code == 200
        for bad in (b"caf\xc3\xa9", b"x" * 256):
            response = await http.post("/v1/chat/completions", json=body, headers=[(b"Idempotency-Key", bad)])
            assert response.status_code == 400, response.text
            assert response.json()["error"]["code"] == "idempotency_key_invalid"
        # The transcoded routes forward the header too.
        created = [
            await http.post("/agentapi/v1/conversations", json={"title": "t"}, headers={"Idempotency-Key": idem + "-c"})
            for _ in range(2)
        ]
        assert created[0].status_code == 200 and created[0].json() == created[1].json()


async def test_retry_storm_reaches_the_upstream_once(stack: Stack, key: str, upstream: ScriptedUpstream) -> None:
    session = await create_session(stack, (await create_agent(stack, key)).id)
    marker, idem = uuid.uuid4().hex, new_key()
    content = f"storm {marker} one two three [[slow:100]]"

    async def attempt() -> tuple[str, Any]:
        try:
            return "ok", await stream(stack, session.id, content, idem)
        except grpc.aio.AioRpcError as exc:
            return error_reason(exc), None

    outcomes = await asyncio.gather(*(attempt() for _ in range(50)))
    assert upstream_calls(upstream, marker) == 1
    reasons = {reason for reason, _ in outcomes}
    assert reasons <= {"ok", "IDEMPOTENCY_REQUEST_IN_FLIGHT"}, reasons
    finals = {events[-1].assistant_message.id for reason, events in outcomes if reason == "ok"}
    assert len(finals) == 1
    replay = await stream(stack, session.id, content, idem)
    assert replay[-1].assistant_message.id in finals
    assert len(await all_messages(stack, session.id)) == 2


async def test_two_processes_sharing_a_database(mariadb_url: str, key: str) -> None:
    """Two agentapi servers (separate pools, runner ids and in-process state) on
    one MariaDB database: a key claimed on one is in flight on the other, then
    replayed there without a second upstream call."""
    with ScriptedUpstream() as upstream:
        a = await start_stack(mariadb_url, upstream.base_url, "unused", runner_id="replica-a")
        b = await start_stack(mariadb_url, upstream.base_url, "unused", runner_id="replica-b")
        try:
            session = await create_session(a, (await create_agent(a, key)).id)
            marker, idem = uuid.uuid4().hex, new_key()
            content = f"shared {marker} one two three [[slow:150]]"
            running = asyncio.create_task(stream(a, session.id, content, idem))
            while upstream_calls(upstream, marker) == 0:
                await asyncio.sleep(0.01)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stream(b, session.id, content, idem)
            assert error_reason(caught.value) == "IDEMPOTENCY_REQUEST_IN_FLIGHT"
            first = await running
            replay = await stream(b, session.id, content, idem)
            assert replay[-1].assistant_message == first[-1].assistant_message
            assert upstream_calls(upstream, marker) == 1

            storm_marker, storm_key = uuid.uuid4().hex, new_key()
            storm_content = f"storm {storm_marker} x y [[slow:50]]"

            async def attempt(stack: Stack) -> str:
                try:
                    await stream(stack, session.id, storm_content, storm_key)
                    return "ok"
                except grpc.aio.AioRpcError as exc:
                    return error_reason(exc)

            outcomes = await asyncio.gather(*(attempt(a if i % 2 else b) for i in range(20)))
            assert set(outcomes) <= {"ok", "IDEMPOTENCY_REQUEST_IN_FLIGHT"}
            assert upstream_calls(upstream, storm_marker) == 1
        finally:
            await b.stop()  # last started, first stopped (see tests/stack.py on uvicorn's signal handlers)
            await a.stop()


async def test_replay_after_restart(stack: Stack, key: str, upstream: ScriptedUpstream) -> None:
    session = await create_session(stack, (await create_agent(stack, key)).id)
    marker, idem = uuid.uuid4().hex, new_key()
    first = await stream(stack, session.id, f"durable {marker}", idem)
    await stack.restart()
    again = await stream(stack, session.id, f"durable {marker}", idem)
    assert again[-1].assistant_message == first[-1].assistant_message
    assert upstream_calls(upstream, marker) == 1


async def test_records_expire_and_are_purged(sqlite_url: str, key: str) -> None:
    short = await start_stack(sqlite_url, idempotency_retention_s=0.5, runner_id="short-retention")
    try:
        idem = new_key()
        request = pb.CreateConversationRequest(conversation=pb.Conversation(title="t"))
        first = await short.conversations.CreateConversation(request, metadata=keyed(idem))
        assert (await short.conversations.CreateConversation(request, metadata=keyed(idem))) == first
        await asyncio.sleep(0.6)
        # Past retention a key is free again, even before the purge runs.
        assert (await short.conversations.CreateConversation(request, metadata=keyed(idem))) != first
        await short.conversations.CreateConversation(request, metadata=keyed(new_key()))
        await asyncio.sleep(0.6)
        count = "SELECT COUNT(*) FROM idempotency_records WHERE runner_id = 'short-retention'"
        assert (await rows(sqlite_url, count))[0][0] == 2
        result = subprocess.run(
            [sys.executable, "-m", "server.cli", "purge", "--database-url", sqlite_url],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        assert "purged 2 expired idempotency records" in result.stderr
        assert (await rows(sqlite_url, count))[0][0] == 0
    finally:
        await short.stop()


async def test_record_of_a_dead_runner_is_taken_over(offline_stack: Stack) -> None:
    """An in-progress record older than the longest a request may run belongs to
    a runner that died: the next request with the key runs instead of waiting."""
    idem = new_key()
    request = pb.CreateConversationRequest(conversation=pb.Conversation(title="orphan"))
    url = offline_stack.config.database_url
    engine = create_async_engine(url)
    async with engine.begin() as connection:
        await connection.execute(
            text(
                "INSERT INTO idempotency_records (tenant_id, `key`, method, request_hash, state, runner_id,"
                " create_time, update_time, expire_time) VALUES ('default', :k, :m, :h, 'in_progress', 'dead',"
                " '2000-01-01 00:00:00', '2000-01-01 00:00:00', '2999-01-01 00:00:00')"
            ),
            {
                "k": idem,
                "m": "/agentapi.v1.ConversationService/CreateConversation",
                "h": _hash(request, offline_stack.config),
            },
        )
    await engine.dispose()
    created = await offline_stack.conversations.CreateConversation(request, metadata=keyed(idem))
    assert created.conversation.title == "orphan"
    assert (await offline_stack.conversations.CreateConversation(request, metadata=keyed(idem))) == created


def _hash(request: Any, config: Any) -> str:
    from server.app import derived_secret
    from server.domain.idempotency import request_hash

    return request_hash(
        "/agentapi.v1.ConversationService/CreateConversation",
        request.SerializeToString(deterministic=True),
        derived_secret(config, b"idempotency-hash"),
    )


async def test_submit_tool_outputs_replays(stack: Stack, key: str, upstream: ScriptedUpstream) -> None:
    session = await create_session(stack, (await create_agent(stack, key)).id)
    events = await stream(stack, session.id, 'weather [[tool:get_weather {"city": "Oslo"}]]', new_key())
    call_id = events[-1].assistant_message.tool_calls[0].id
    marker, idem = uuid.uuid4().hex, new_key()
    request = pb.SubmitToolOutputsRequest(
        session_id=session.id, tool_outputs=[pb.ToolOutput(tool_call_id=call_id, output=f"sunny {marker}")]
    )
    first = [e async for e in stack.sessions.SubmitToolOutputs(request, metadata=keyed(idem))]
    again = [e async for e in stack.sessions.SubmitToolOutputs(request, metadata=keyed(idem))]
    assert first[-1].assistant_message.status == pb.MESSAGE_STATUS_COMPLETED
    assert again[-1].assistant_message == first[-1].assistant_message
    assert [e.input_message for e in again if e.HasField("input_message")] == [
        e.input_message for e in first if e.HasField("input_message")
    ]
    tool_turns = [
        r for r in upstream.requests if r["path"].endswith("/chat/completions") and marker in str(r["body"]["messages"])
    ]
    assert len(tool_turns) == 1


async def test_cancelled_keyed_turn_replays_what_was_stored(stack: Stack, key: str, upstream: ScriptedUpstream) -> None:
    """The caller went away mid-stream: the turn is stored CANCELLED, and a retry
    with the key replays it (input, the deltas streamed, then CANCELLED) rather
    than storing the user's message a second time."""
    session = await create_session(stack, (await create_agent(stack, key)).id)
    marker, idem = uuid.uuid4().hex, new_key()
    content = f"cancel {marker} one two three four five six [[slow:200]]"
    call = stack.sessions.SendStreamingMessage(
        pb.SendStreamingMessageRequest(session_id=session.id, messages=[user(content)]), metadata=keyed(idem)
    )
    async for event in call:
        if event.HasField("delta"):
            break
    call.cancel()
    for _ in range(300):  # until the server has stored the outcome of the cancelled call
        replay: list[pb.SendStreamingMessageResponse] = []
        retry = stack.sessions.SendStreamingMessage(
            pb.SendStreamingMessageRequest(session_id=session.id, messages=[user(content)]), metadata=keyed(idem)
        )
        try:
            async for event in retry:
                replay.append(event)
        except grpc.aio.AioRpcError as exc:
            if error_reason(exc) == "CANCELLED":
                break
            assert error_reason(exc) == "IDEMPOTENCY_REQUEST_IN_FLIGHT"
        await asyncio.sleep(0.02)
    else:
        raise AssertionError("the cancelled call's outcome was never stored")
    assert replay[1].input_message.content == content
    assert replay[2].delta.content.startswith("Echo: ")
    stored = await all_messages(stack, session.id)
    assert [(m.role, m.status) for m in stored] == [
        (pb.ROLE_USER, pb.MESSAGE_STATUS_COMPLETED),
        (pb.ROLE_ASSISTANT, pb.MESSAGE_STATUS_CANCELLED),
    ]
    assert upstream_calls(upstream, marker) == 1
