"""Issue 13, sections 4 and 5, in process: exact money, budgets under
concurrency, one upstream call per busy-session race, the stop reason of a
turn cut by its deadline, an idempotency key that survives a database outage,
a frozen database that fails calls fast (and health that follows it), and
the reclaim of a dead runner's turns.

Real parts throughout: the gRPC server, SQLite and MariaDB, the LiteLLM proxy
in front of the scripted upstream; faults come from a TCP proxy between
agentapi and MariaDB (the shared server itself is never touched)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import timedelta
from decimal import Decimal
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from agentapi import v1 as pb
from server.domain.common import utcnow
from tests.helpers import all_messages, create_session, error_reason, user
from tests.stack import AUTH, Stack, start_stack
from tests.support.tcp_proxy import TcpProxy
from tests.support.upstream import ScriptedUpstream
from tests.test_tenancy import bearer, new_key, new_tenant

CALL_TIMEOUT_S = 30.0


async def sql(url: str, statement: str, **params: Any) -> list[Any]:
    """Runs one statement on its own engine (committed), returning its rows if any."""
    engine = create_async_engine(url)
    try:
        async with engine.begin() as connection:
            result = await connection.execute(text(statement), params)
            return list(result.all()) if result.returns_rows else []
    finally:
        await engine.dispose()


def stored_error(message: pb.Message) -> str:
    from google.rpc import error_details_pb2

    for detail in message.error.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return info.reason
    return ""


# 4b. Money is exact -------------------------------------------------------------------------------


async def test_costs_read_back_exactly_and_sum_exactly(stack: Stack) -> None:
    """LiteLLM prices scripted-a at 1e-06 in, 2e-06 out; the upstream counts
    words: "a b c d e f" is 6 prompt tokens, "Echo: a b c d e f" 7 completion
    tokens, so each turn costs 2e-05 and three 6e-05. MySQL's FLOAT read 2e-05
    back as 1.9999999494757503e-05; float sums give 6.000000000000001e-05."""
    tenant = await new_tenant(stack)
    auth = bearer(await new_key(stack, tenant))
    session = (
        await stack.sessions.CreateSession(
            pb.CreateSessionRequest(session=pb.Session(overrides=pb.SessionSettings(model="scripted-a"))), metadata=auth
        )
    ).session
    for n in range(3):
        reply = await stack.sessions.SendMessage(
            pb.SendMessageRequest(session_id=session.id, messages=[user("a b c d e f")]), metadata=auth
        )
        assert (reply.message.usage.prompt_tokens, reply.message.usage.completion_tokens) == (6 + 7 * n + 6 * n, 7)
    page = await stack.sessions.ListMessages(pb.ListMessagesRequest(session_id=session.id), metadata=auth)
    costs = [m.usage.cost_usd for m in page.messages if m.role == pb.ROLE_ASSISTANT]
    # The history grows: turn n sends n earlier exchanges too.
    expected = [float(Decimal(p) * Decimal("1e-6") + Decimal(7) * Decimal("2e-6")) for p in (6, 19, 32)]
    assert costs == expected
    report = await stack.usage.GetUsage(pb.GetUsageRequest(tenant_id=tenant), metadata=AUTH)
    assert report.total.cost_usd == float(sum(Decimal(str(c)) for c in expected))
    assert [r.cost_usd for r in report.rows] == [report.total.cost_usd]


async def test_tenant_cost_cap_is_exact(stack: Stack) -> None:
    tenant = await new_tenant(stack, budget=pb.Budget(period=pb.BUDGET_PERIOD_MONTH, max_cost_usd=6e-05))
    got = await stack.tenants.GetTenant(pb.GetTenantRequest(tenant_id=tenant), metadata=AUTH)
    assert got.tenant.budget.max_cost_usd == 6e-05
    for bad in (float("inf"), float("nan"), 1e11):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stack.tenants.CreateTenant(
                pb.CreateTenantRequest(
                    tenant=pb.Tenant(id=f"t-{uuid.uuid4().hex[:8]}", budget=pb.Budget(max_cost_usd=bad))
                ),
                metadata=AUTH,
            )
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT


# 4a. Budgets hold under concurrency ---------------------------------------------------------------


async def test_concurrent_turns_stay_within_the_token_budget(
    stack: Stack, upstream: ScriptedUpstream, database_url: str
) -> None:
    """40 turns at once, 100 tokens a day. Each turn reserves its prompt (about
    8 tokens by our count) plus its max_output_tokens (16), so about four run
    at a time; the scripted replies (7 tokens of prompt by the upstream's
    count, 5 of output) stay within their reservations, so the rule's bound
    (the budget, plus what admitted turns spend beyond their reservation) is
    the budget itself here. Before reservations, all 40 ran: 480 tokens."""
    tenant = await new_tenant(stack, budget=pb.Budget(period=pb.BUDGET_PERIOD_DAY, max_tokens=100))
    auth = bearer(await new_key(stack, tenant))
    settings = pb.SessionSettings(model="scripted-a", max_output_tokens=16)
    sessions = [
        (
            await stack.sessions.CreateSession(
                pb.CreateSessionRequest(session=pb.Session(overrides=settings)), metadata=auth
            )
        ).session.id
        for _ in range(40)
    ]
    before = len(upstream.requests)

    async def one(session_id: str) -> tuple[str, str]:
        try:
            reply = await stack.sessions.SendMessage(
                pb.SendMessageRequest(session_id=session_id, messages=[user("a budget race b c [[slow:20]]")]),
                metadata=auth,
                timeout=CALL_TIMEOUT_S,
            )
        except grpc.aio.AioRpcError as exc:
            return exc.code().name, error_reason(exc)
        return "OK", pb.MessageStatus.Name(reply.message.status)

    outcomes = await asyncio.gather(*(one(s) for s in sessions))
    admitted = [s for s, o in zip(sessions, outcomes, strict=True) if o[0] == "OK"]
    refused = [s for s, o in zip(sessions, outcomes, strict=True) if o[0] != "OK"]
    assert {o for o in outcomes if o[0] == "OK"} == {("OK", "MESSAGE_STATUS_COMPLETED")}
    assert {o for o in outcomes if o[0] != "OK"} == {("RESOURCE_EXHAUSTED", "BUDGET_EXCEEDED")}
    assert len(admitted) >= 2 and refused, outcomes  # several ran at once, and the cap bit
    report = await stack.usage.GetUsage(pb.GetUsageRequest(), metadata=auth)
    print(f"\n{len(admitted)} of 40 admitted, {report.total.total_tokens} tokens used of 100")
    assert report.total.turns == len(admitted)
    assert report.total.total_tokens <= 100
    # The refused stored nothing and never reached the upstream.
    for session_id in refused:
        page = await stack.sessions.ListMessages(pb.ListMessagesRequest(session_id=session_id), metadata=auth)
        assert list(page.messages) == []
    assert len(upstream.requests) - before == len(admitted)
    # No reservation outlives its turn.
    assert await sql(database_url, "SELECT reply_id FROM budget_reservations WHERE tenant_id = :t", t=tenant) == []


async def test_concurrent_turns_stay_within_the_cost_budget(stack: Stack, database_url: str) -> None:
    """20 turns at once against $0.0001 a month. A turn reserves the catalog's
    price of its prompt and max_output_tokens (about $0.00004), capped at the
    money left; it is admitted while any is left. So the last admitted turn may
    spend past its capped reservation: the bound is the cap plus one turn."""
    tenant = await new_tenant(stack, budget=pb.Budget(period=pb.BUDGET_PERIOD_MONTH, max_cost_usd=0.0001))
    auth = bearer(await new_key(stack, tenant))
    settings = pb.SessionSettings(model="scripted-a", max_output_tokens=16)
    sessions = [
        (
            await stack.sessions.CreateSession(
                pb.CreateSessionRequest(session=pb.Session(overrides=settings)), metadata=auth
            )
        ).session.id
        for _ in range(20)
    ]

    async def one(session_id: str) -> pb.Message | str:
        try:
            reply = await stack.sessions.SendMessage(
                pb.SendMessageRequest(session_id=session_id, messages=[user("a cost race b c [[slow:20]]")]),
                metadata=auth,
                timeout=CALL_TIMEOUT_S,
            )
        except grpc.aio.AioRpcError as exc:
            return f"{exc.code().name}/{error_reason(exc)}"
        return reply.message

    outcomes = await asyncio.gather(*(one(s) for s in sessions))
    replies = [o for o in outcomes if isinstance(o, pb.Message)]
    assert {o for o in outcomes if isinstance(o, str)} == {"RESOURCE_EXHAUSTED/BUDGET_EXCEEDED"}
    spent = sum(Decimal(str(r.usage.cost_usd)) for r in replies)
    print(f"\n{len(replies)} of 20 admitted, ${spent} spent of $0.0001")
    assert len(replies) >= 2
    assert spent <= Decimal("0.0001") + max(Decimal(str(r.usage.cost_usd)) for r in replies)
    assert await sql(database_url, "SELECT reply_id FROM budget_reservations WHERE tenant_id = :t", t=tenant) == []


async def test_failed_and_busy_turns_release_their_reservation(stack: Stack, database_url: str) -> None:
    tenant = await new_tenant(stack, budget=pb.Budget(period=pb.BUDGET_PERIOD_DAY, max_tokens=100_000))
    auth = bearer(await new_key(stack, tenant))
    session = (
        await stack.sessions.CreateSession(
            pb.CreateSessionRequest(session=pb.Session(overrides=pb.SessionSettings(model="scripted-a"))), metadata=auth
        )
    ).session
    with pytest.raises(grpc.aio.AioRpcError):  # a turn that fails upstream
        await stack.sessions.SendMessage(
            pb.SendMessageRequest(session_id=session.id, messages=[user("fail [[error:400]]")]), metadata=auth
        )
    slow = stack.sessions.SendMessage(
        pb.SendMessageRequest(session_id=session.id, messages=[user("slow one two three [[slow:100]]")]), metadata=auth
    )
    await asyncio.sleep(0.15)
    with pytest.raises(grpc.aio.AioRpcError) as busy:
        await stack.sessions.SendMessage(
            pb.SendMessageRequest(session_id=session.id, messages=[user("too early")]), metadata=auth
        )
    assert error_reason(busy.value) == "SESSION_BUSY"
    assert (await slow).message.status == pb.MESSAGE_STATUS_COMPLETED
    assert await sql(database_url, "SELECT reply_id FROM budget_reservations WHERE tenant_id = :t", t=tenant) == []


# 5f. Losers of a busy-session race never reach the upstream -----------------------------------------


async def test_a_busy_session_race_calls_the_upstream_once(stack: Stack, upstream: ScriptedUpstream) -> None:
    for _ in range(3):
        session = await create_session(stack, model="scripted-a")
        before = len(upstream.requests)

        async def one(n: int, session_id: str = session.id) -> str:
            try:
                await stack.sessions.SendMessage(
                    pb.SendMessageRequest(session_id=session_id, messages=[user(f"race {n} a b c [[slow:40]]")]),
                    metadata=AUTH,
                    timeout=CALL_TIMEOUT_S,
                )
            except grpc.aio.AioRpcError as exc:
                return f"{exc.code().name}/{error_reason(exc)}"
            return "OK"

        outcomes = await asyncio.gather(*(one(n) for n in range(8)))
        assert sorted(outcomes) == ["ABORTED/SESSION_BUSY"] * 7 + ["OK"], outcomes
        assert len(upstream.requests) - before == 1
        stored = await all_messages(stack, session.id)
        assert [m.role for m in stored] == [pb.ROLE_USER, pb.ROLE_ASSISTANT]


# 5e. The caller's deadline is the stored reason --------------------------------------------------------


async def test_a_turn_cut_by_the_callers_deadline_is_stored_with_that_reason(stack: Stack) -> None:
    session = await create_session(stack, model="scripted-a")
    words = " ".join(f"w{i}" for i in range(40))
    call = stack.sessions.SendStreamingMessage(
        pb.SendStreamingMessageRequest(session_id=session.id, messages=[user(f"{words} [[slow:100]]")]),
        metadata=AUTH,
        timeout=1.0,
    )
    with pytest.raises(grpc.aio.AioRpcError) as ended:
        async for _ in call:
            pass
    assert ended.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    deadline = time.monotonic() + 10
    while (reply := (await all_messages(stack, session.id))[-1]).status == pb.MESSAGE_STATUS_IN_PROGRESS:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    # FAILED as when the server's own timer ends it (gRPC's cancel and the
    # turn's timer race at the caller's deadline); not "the caller cancelled".
    assert reply.status == pb.MESSAGE_STATUS_FAILED
    assert stored_error(reply) == "TURN_DEADLINE_EXCEEDED"
    assert reply.content  # the part streamed before the deadline is kept


# 5a. A database outage does not poison an idempotency key -------------------------------------------


@pytest.fixture
async def proxied(mariadb_url: str) -> Any:
    """agentapi on MariaDB through a TCP proxy, straight to a scripted upstream,
    with short database timeouts and readiness checks."""
    with ScriptedUpstream() as scripted, TcpProxy("127.0.0.1", make_url(mariadb_url).port or 3306) as proxy:
        url = make_url(mariadb_url).set(port=proxy.port).render_as_string(hide_password=False)
        running = await start_stack(
            url,
            scripted.base_url,
            "unused",
            runner_id=f"faults-{uuid.uuid4().hex[:6]}",
            db_connect_timeout_s=1.0,
            db_query_timeout_s=1.0,
            db_pool_timeout_s=1.0,
            readiness_interval_s=0.5,
        )
        try:
            yield running, proxy, scripted
        finally:
            proxy.thaw()
            proxy.restore()
            await running.stop()


async def test_a_keyed_turn_cut_by_a_database_outage_runs_again_on_retry(proxied: Any) -> None:
    stack, proxy, scripted = proxied
    session = await create_session(stack, model="scripted-a")
    key = (("idempotency-key", f"outage-{uuid.uuid4()}"),)
    request = pb.SendStreamingMessageRequest(
        session_id=session.id, messages=[user("outage one two three four five six [[slow:150]]")]
    )
    call = stack.sessions.SendStreamingMessage(request, metadata=(*AUTH, *key), timeout=CALL_TIMEOUT_S)
    first = []
    async for event in call:
        first.append(event)
        if event.HasField("delta"):
            break
    proxy.cut()  # the reply's terminal write will find no database
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        async for event in call:
            first.append(event)
    assert (failed.value.code(), error_reason(failed.value)) == (grpc.StatusCode.UNAVAILABLE, "DATABASE_UNAVAILABLE")
    proxy.restore()
    scripted.reset()
    # Retried as a client would: while the lost turn is being reclaimed, the key
    # is in flight or the session busy (both ABORTED); then the turn runs.
    deadline = time.monotonic() + 20
    while True:
        try:
            retried = [e async for e in stack.sessions.SendStreamingMessage(request, metadata=(*AUTH, *key))]
            break
        except grpc.aio.AioRpcError as exc:
            assert exc.code() == grpc.StatusCode.ABORTED, (exc.code(), error_reason(exc))
            assert time.monotonic() < deadline, "the key stayed poisoned"
            await asyncio.sleep(0.2)
    final = retried[-1].assistant_message
    assert final.status == pb.MESSAGE_STATUS_COMPLETED
    assert final.content == "Echo: outage one two three four five six"
    # The stored input answered again: one user message, the same one, sent upstream once.
    inputs = [e.input_message.id for e in retried if e.HasField("input_message")]
    assert inputs == [e.input_message.id for e in first if e.HasField("input_message")]
    stored = await all_messages(stack, session.id)
    assert [(m.role, m.status) for m in stored] == [
        (pb.ROLE_USER, pb.MESSAGE_STATUS_COMPLETED),
        (pb.ROLE_ASSISTANT, pb.MESSAGE_STATUS_FAILED),
        (pb.ROLE_ASSISTANT, pb.MESSAGE_STATUS_COMPLETED),
    ]
    assert stored_error(stored[1]) == "INTERRUPTED"
    (sent,) = [r["body"]["messages"] for r in scripted.requests if r["path"].endswith("/chat/completions")]
    assert [m["role"] for m in sent] == ["user"]
    # A replay now returns the completed turn.
    replay = [e async for e in stack.sessions.SendStreamingMessage(request, metadata=(*AUTH, *key))]
    assert replay[-1].assistant_message.id == final.id


# 5c, 5d. A frozen database fails calls fast, and health follows it -------------------------------------


async def health(stack: Stack) -> int:
    reply = await health_pb2_grpc.HealthStub(stack.channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    return reply.status


async def test_a_frozen_database_fails_calls_fast_and_health_follows(proxied: Any) -> None:
    stack, proxy, _ = proxied
    session = await create_session(stack, model="scripted-a")
    assert await health(stack) == health_pb2.HealthCheckResponse.SERVING
    proxy.freeze()  # connections stay open; nothing comes back
    for call in (
        stack.sessions.GetSession(pb.GetSessionRequest(session_id=session.id), metadata=AUTH, timeout=CALL_TIMEOUT_S),
        stack.sessions.SendMessage(
            pb.SendMessageRequest(session_id=session.id, messages=[user("frozen")]),
            metadata=AUTH,
            timeout=CALL_TIMEOUT_S,
        ),
        stack.sessions.CreateSession(
            pb.CreateSessionRequest(session=pb.Session(overrides=pb.SessionSettings(model="scripted-a"))),
            metadata=AUTH,
            timeout=CALL_TIMEOUT_S,
        ),
    ):
        started = time.monotonic()
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await call
        elapsed = time.monotonic() - started
        assert (failed.value.code(), error_reason(failed.value)) == (
            grpc.StatusCode.UNAVAILABLE,
            "DATABASE_UNAVAILABLE",
        )
        assert elapsed < 10, f"a call waited {elapsed:.1f} s on a frozen database"
    deadline = time.monotonic() + 10
    while await health(stack) != health_pb2.HealthCheckResponse.NOT_SERVING:
        assert time.monotonic() < deadline, "health stayed SERVING with the database frozen"
        await asyncio.sleep(0.2)
    proxy.thaw()
    deadline = time.monotonic() + 20
    while await health(stack) != health_pb2.HealthCheckResponse.SERVING:
        assert time.monotonic() < deadline, "health did not come back"
        await asyncio.sleep(0.2)
    while True:  # the session frees once the reply the freeze cut is reclaimed
        try:
            reply = await stack.sessions.SendMessage(
                pb.SendMessageRequest(session_id=session.id, messages=[user("thawed")]), metadata=AUTH, timeout=10
            )
            break
        except grpc.aio.AioRpcError as exc:
            assert (exc.code(), error_reason(exc)) in (
                (grpc.StatusCode.ABORTED, "SESSION_BUSY"),
                (grpc.StatusCode.UNAVAILABLE, "DATABASE_UNAVAILABLE"),
            )
            assert time.monotonic() < deadline, "no recovery after the thaw"
            await asyncio.sleep(0.2)
    assert reply.message.status == pb.MESSAGE_STATUS_COMPLETED


async def test_health_is_not_serving_on_an_unmigrated_database(tmp_path: Any) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}"
    running = await start_stack(url, readiness_interval_s=0.2)
    try:
        assert await health(running) == health_pb2.HealthCheckResponse.NOT_SERVING
    finally:
        await running.stop()


# 5g. A dead runner's turns are reclaimed by any live replica ----------------------------------------------


async def test_a_silent_runners_turns_and_reservations_are_reclaimed(stack: Stack, database_url: str) -> None:
    """A runner that stopped beating (it died, and came back under another id)
    left a reply IN_PROGRESS, its session held, a budget reservation and an
    idempotency key: a live replica's sweep frees all of them."""
    tenant = await new_tenant(stack, budget=pb.Budget(period=pb.BUDGET_PERIOD_DAY, max_tokens=1000))
    auth = bearer(await new_key(stack, tenant))
    session = (
        await stack.sessions.CreateSession(
            pb.CreateSessionRequest(session=pb.Session(overrides=pb.SessionSettings(model="scripted-a"))), metadata=auth
        )
    ).session
    dead = f"dead-{uuid.uuid4().hex[:8]}"
    reply_id, now = str(uuid.uuid4()), utcnow()
    long_ago = now - timedelta(seconds=120)
    await sql(
        database_url,
        "INSERT INTO runners (id, start_time, heartbeat_time) VALUES (:r, :t, :t)",
        r=dead,
        t=long_ago,
    )
    await sql(
        database_url,
        "INSERT INTO messages (id, tenant_id, session_id, sequence, role, content, tool_call_id, name, model, status,"
        " finish_reason, prompt_tokens, completion_tokens, time_to_first_token_ms, duration_ms, cost_usd,"
        " upstream_request_id, metadata, token_count, prompt_first_sequence, prompt_last_sequence, runner_id,"
        " create_time, update_time) VALUES (:id, :t, :s, 1, 'assistant', '', '', '', 'scripted-a', 'in_progress',"
        " '', 0, 0, 0, 0, 0, '', '{}', 0, 0, 0, :r, :now, :now)",
        id=reply_id,
        t=tenant,
        s=session.id,
        r=dead,
        now=now,
    )
    await sql(database_url, "UPDATE sessions SET active_reply_id = :m WHERE id = :s", m=reply_id, s=session.id)
    await sql(
        database_url,
        "INSERT INTO budget_reservations (reply_id, tenant_id, tokens, cost_usd, create_time)"
        " VALUES (:m, :t, 990, 0, :now)",
        m=reply_id,
        t=tenant,
        now=now,
    )
    await sql(
        database_url,
        "INSERT INTO idempotency_records (tenant_id, `key`, method, request_hash, state, runner_id, create_time,"
        " update_time, expire_time) VALUES (:t, 'k-dead', 'm', 'h', 'in_progress', :r, :now, :now, :later)",
        t=tenant,
        r=dead,
        now=now,
        later=now + timedelta(days=1),
    )
    # The live replica's own sweep (every 2 s; the default dead-after is 30 s) finds it.
    deadline = time.monotonic() + 15
    while await sql(database_url, "SELECT id FROM runners WHERE id = :r", r=dead):
        assert time.monotonic() < deadline, "the silent runner was never reclaimed"
        await asyncio.sleep(0.2)
    ((status, error),) = await sql(database_url, "SELECT status, error FROM messages WHERE id = :m", m=reply_id)
    error = error if isinstance(error, dict) else json.loads(error)
    assert (status, error["reason"]) == ("failed", "INTERRUPTED")
    assert await sql(database_url, "SELECT active_reply_id FROM sessions WHERE id = :s", s=session.id) == [(None,)]
    assert await sql(database_url, "SELECT * FROM budget_reservations WHERE reply_id = :m", m=reply_id) == []
    assert await sql(database_url, "SELECT * FROM idempotency_records WHERE runner_id = :r", r=dead) == []
    reply = await stack.sessions.SendMessage(
        pb.SendMessageRequest(session_id=session.id, messages=[user("free again")]), metadata=auth
    )
    assert reply.message.status == pb.MESSAGE_STATUS_COMPLETED
