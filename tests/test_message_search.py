"""SearchMessages (issue 22) on SQLite (FTS5) and MariaDB (FULLTEXT), with
messages stored by turns through the real LiteLLM proxy: tenant isolation,
filters, ranking, paging, snippets, deleted messages, validation, and the
REST mapping. Search words are 4+ letters and unique per test: MariaDB skips
words under ``innodb_ft_min_token_size`` (3) and its stopwords."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from alembic import command
from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy import text
from sqlalchemy.engine import make_url

from agentapi import v1 as pb
from server.domain.message_history import mark_snippet
from server.domain.runs.messages import new_message
from server.store.db import Database
from server.store.message_history import SearchFilters, fts5_query, search
from server.store.migrate import alembic_config, upgrade
from server.store.models import ConversationRow, SessionRow
from tests.conftest import MYSQL_SERVER_URL, _mysql_connect, unavailable
from tests.helpers import create_agent, error_reason, user
from tests.stack import AUTH, Stack

Metadata = tuple[tuple[str, str], ...]


async def _tenant(stack: Stack) -> Metadata:
    tenant_id = f"t-{uuid.uuid4().hex[:10]}"
    await stack.tenants.CreateTenant(pb.CreateTenantRequest(tenant=pb.Tenant(id=tenant_id)), metadata=AUTH)
    created = await stack.api_keys.CreateApiKey(
        pb.CreateApiKeyRequest(api_key=pb.ApiKey(tenant_id=tenant_id, scope=pb.API_KEY_SCOPE_CLIENT)), metadata=AUTH
    )
    return (("authorization", f"Bearer {created.secret}"),)


async def _session(stack: Stack, auth: Metadata, agent_id: str = "") -> pb.Session:
    session = pb.Session(agent_id=agent_id, overrides=pb.SessionSettings(model="" if agent_id else "scripted-a"))
    return (await stack.sessions.CreateSession(pb.CreateSessionRequest(session=session), metadata=auth)).session


async def _turn(stack: Stack, auth: Metadata, session_id: str, text: str) -> pb.SendMessageResponse:
    request = pb.SendMessageRequest(session_id=session_id, messages=[user(text)])
    return await stack.sessions.SendMessage(request, metadata=auth)


async def _search(stack: Stack, auth: Metadata, query: str, **fields: Any) -> pb.SearchMessagesResponse:
    return await stack.sessions.SearchMessages(pb.SearchMessagesRequest(query=query, **fields), metadata=auth)


async def _refused(call: Any, code: grpc.StatusCode, reason: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    assert (caught.value.code(), error_reason(caught.value)) == (code, reason)


def _word(stem: str) -> str:
    """A word no other test writes (letters and digits: one token for both engines)."""
    return f"{stem}{uuid.uuid4().hex[:8]}"


def _stamp(value: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(value)
    return stamp


async def test_search_finds_words_in_other_conversations_of_the_tenant_only(stack: Stack, key: str) -> None:
    alpha, beta = await _tenant(stack), await _tenant(stack)
    word = _word("quokka")
    first, second = await _session(stack, alpha), await _session(stack, alpha)
    await _turn(stack, alpha, first.id, f"tell me about {word} habits")
    await _turn(stack, alpha, second.id, f"more {word} facts, and {word} again")
    beta_session = await _session(stack, beta)
    await _turn(stack, beta, beta_session.id, f"beta writes {word} too")
    await _turn(stack, alpha, first.id, "nothing related here")

    found = await _search(stack, alpha, word)
    # Each user message and its echoed reply: four messages, two conversations, none of beta's.
    assert len(found.results) == 4 and not found.next_page_token
    assert {r.conversation_id for r in found.results} == {first.conversation_id, second.conversation_id}
    assert {r.message.session_id for r in found.results} == {first.id, second.id}
    scores = [r.score for r in found.results]
    assert scores == sorted(scores, reverse=True) and all(score > 0 for score in scores)
    assert found.results[0].message.session_id == second.id  # the word twice ranks first
    for result in found.results:
        assert f"<mark>{word}</mark>" in result.snippet
        assert result.snippet.replace("<mark>", "").replace("</mark>", "").strip("…") in result.message.content
    assert [r.message.session_id for r in (await _search(stack, beta, word)).results] == [beta_session.id] * 2
    assert not (await _search(stack, alpha, _word("absent"))).results

    # Operators search their own tenant ("default"), not every tenant.
    assert not (await _search(stack, AUTH, word)).results


async def test_search_filters(stack: Stack, key: str) -> None:
    auth = await _tenant(stack)
    agent = await create_agent(stack, key, model="scripted-a")
    word = _word("pelican")
    plain, with_agent = await _session(stack, auth), await _session(stack, auth, agent.id)
    await _turn(stack, auth, plain.id, f"the {word} flies")
    await _turn(stack, auth, with_agent.id, f"the {word} swims")

    def sessions(response: pb.SearchMessagesResponse) -> list[str]:
        return sorted(r.message.session_id for r in response.results)

    assert sessions(await _search(stack, auth, word)) == sorted([plain.id] * 2 + [with_agent.id] * 2)
    by_role = await _search(stack, auth, word, role=pb.ROLE_USER)
    assert {r.message.role for r in by_role.results} == {pb.ROLE_USER} and len(by_role.results) == 2
    assert sessions(await _search(stack, auth, word, session_id=plain.id)) == [plain.id] * 2
    assert sessions(await _search(stack, auth, word, conversation_id=with_agent.conversation_id)) == [with_agent.id] * 2
    assert sessions(await _search(stack, auth, word, agent_id=key)) == [with_agent.id] * 2
    assert sessions(await _search(stack, auth, word, agent_id=agent.id)) == [with_agent.id] * 2
    now = datetime.now(UTC).replace(tzinfo=None)
    hour = timedelta(hours=1)
    assert len((await _search(stack, auth, word, start_time=_stamp(now - hour))).results) == 4
    assert not (await _search(stack, auth, word, start_time=_stamp(now + hour))).results
    assert not (await _search(stack, auth, word, end_time=_stamp(now - hour))).results


async def test_search_pages_and_skips_deleted_messages(stack: Stack) -> None:
    auth = await _tenant(stack)
    word = _word("narwhal")
    session = await _session(stack, auth)
    turns = [await _turn(stack, auth, session.id, f"{word} number {n}") for n in range(3)]

    seen: list[str] = []
    token = ""
    while True:
        page = await _search(stack, auth, word, page_size=2, page_token=token)
        assert len(page.results) <= 2
        seen += [r.message.id for r in page.results]
        token = page.next_page_token
        if not token:
            break
    assert len(seen) == len(set(seen)) == 6
    await _refused(
        _search(
            stack,
            auth,
            f"{word} other",
            page_size=2,
            page_token=(await _search(stack, auth, word, page_size=2)).next_page_token,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_PAGE_TOKEN",
    )

    gone = turns[1].input_messages[0].id
    await stack.sessions.DeleteMessage(pb.DeleteMessageRequest(session_id=session.id, message_id=gone), metadata=auth)
    remaining = [r.message.id for r in (await _search(stack, auth, word)).results]
    assert gone not in remaining and len(remaining) == 5


async def test_search_validates_its_request(stack: Stack) -> None:
    auth = await _tenant(stack)
    invalid = grpc.StatusCode.INVALID_ARGUMENT
    await _refused(_search(stack, auth, ""), invalid, "FIELD_VIOLATION")
    await _refused(_search(stack, auth, "   "), invalid, "FIELD_VIOLATION")
    await _refused(_search(stack, auth, "x" * 257), invalid, "FIELD_VIOLATION")
    await _refused(_search(stack, auth, "word", conversation_id="nope"), invalid, "INVALID_CONVERSATION_ID")
    await _refused(_search(stack, auth, "word", session_id="nope"), invalid, "INVALID_SESSION_ID")
    await _refused(_search(stack, auth, "word", page_size=101), invalid, "FIELD_VIOLATION")
    await _refused(_search(stack, auth, "word", agent_id=_word("nokey")), grpc.StatusCode.NOT_FOUND, "AGENT_NOT_FOUND")
    now = datetime.now(UTC).replace(tzinfo=None)
    await _refused(
        _search(stack, auth, "word", start_time=_stamp(now), end_time=_stamp(now - timedelta(hours=1))),
        invalid,
        "FIELD_VIOLATION",
    )
    # FTS5 syntax in a query is taken as words, not operators.
    assert not (await _search(stack, auth, 'NEAR("a b") OR * ^col:x')).results
    assert len("x" * 256) == 256 and (await _search(stack, auth, "x" * 256)).results == []


async def test_search_over_rest(stack: Stack) -> None:
    word = _word("capybara")
    session = await _session(stack, AUTH)
    await _turn(stack, AUTH, session.id, f"a {word} sits")
    async with stack.http() as http:
        response = await http.get("/agentapi/v1/messages:search", params={"query": word, "sessionId": session.id})
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert len(results) == 2 and all(f"<mark>{word}</mark>" in r["snippet"] for r in results)
    assert {r["conversationId"] for r in results} == {session.conversation_id}


def test_snippets_and_fts5_queries() -> None:
    text = "x" * 100 + " the Walrus sings; walrus again " + "y" * 100
    snippet = mark_snippet(text, ["walrus"], context=20)
    assert snippet.startswith("…") and snippet.endswith("…")
    assert snippet.count("<mark>") == 2 and "<mark>Walrus</mark>" in snippet
    assert mark_snippet("no match here", ["walrus"]) == "no match here"
    assert fts5_query('walrus "OR" NEAR(x)') == '"walrus" OR "OR" OR "NEAR" OR "x"'
    assert fts5_query("!!!") == ""


@pytest.fixture(params=["sqlite", "mariadb"])
def fresh_url(request: pytest.FixtureRequest, tmp_path: Any) -> Any:
    """An empty database of its own, to migrate step by step."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'migrate.db'}"
        return
    name = f"agentapi_mig_{uuid.uuid4().hex[:8]}"
    try:
        connection = _mysql_connect()
    except Exception as exc:  # noqa: BLE001 (pymysql's OperationalError, and the like)
        unavailable(f"MariaDB/MySQL not reachable: {exc}")
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE DATABASE {name} CHARACTER SET utf8mb4")
    yield str(make_url(MYSQL_SERVER_URL).set(database=name).render_as_string(hide_password=False))
    with connection.cursor() as cursor:
        cursor.execute(f"DROP DATABASE {name}")
    connection.close()


async def test_migration_0012_indexes_existing_messages_and_downgrades(fresh_url: str) -> None:
    await asyncio.to_thread(upgrade, fresh_url, "0011")
    word = _word("axolotl")
    db = Database(fresh_url)
    now = datetime.now(UTC).replace(tzinfo=None)
    try:
        async with db.session() as session:  # a message stored before the search index existed
            session.add(
                ConversationRow(
                    id=str(uuid.uuid4()), tenant_id="default", title="", metadata_={}, create_time=now, update_time=now
                )
            )
            await session.flush()
            conversation_id = (await session.execute(text("SELECT id FROM conversations"))).scalar_one()
            session.add(
                SessionRow(
                    id=str(uuid.uuid4()),
                    tenant_id="default",
                    conversation_id=conversation_id,
                    overrides={},
                    metadata_={},
                    create_time=now,
                    update_time=now,
                )
            )
            await session.flush()
            session_id = (await session.execute(text("SELECT id FROM sessions"))).scalar_one()
            for n in range(3):  # MariaDB ranks a word found in every row at 0
                session.add(
                    new_message(session_id, "default", n + 1, "user", now, content=f"{word} {n}" if n == 0 else "else")
                )
            await session.commit()
    finally:
        await db.dispose()

    async def hits() -> list[str]:
        database = Database(fresh_url)
        try:
            async with database.session() as session:
                return [h.message.content for h in await search(session, "default", word, SearchFilters(), None, 10)]
        finally:
            await database.dispose()

    await asyncio.to_thread(upgrade, fresh_url)
    assert await hits() == [f"{word} 0"]
    await asyncio.to_thread(command.downgrade, alembic_config(fresh_url), "0011")
    with pytest.raises(Exception):  # noqa: B017 (no index to search: the engines' errors differ)
        await hits()
    await asyncio.to_thread(upgrade, fresh_url)
    assert await hits() == [f"{word} 0"]
