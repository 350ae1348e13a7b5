"""API keys, tenant isolation, the usage ledger, budgets and rate limits, over
gRPC and over the bridge with the openai SDK, on SQLite and MariaDB, through the
real LiteLLM proxy."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import grpc
import openai
import pytest
import time_machine
from google.protobuf import field_mask_pb2, timestamp_pb2

from agentapi import v1 as pb
from server.domain.history import MESSAGE_OVERHEAD
from tests.helpers import error_reason, field_violations, user
from tests.stack import AUTH, Stack
from tests.support.litellm_proxy import PRICES

Metadata = tuple[tuple[str, str], ...]


def bearer(secret: str) -> Metadata:
    return (("authorization", f"Bearer {secret}"),)


async def new_tenant(stack: Stack, **fields: object) -> str:
    tenant_id = f"t-{uuid.uuid4().hex[:10]}"
    await stack.tenants.CreateTenant(pb.CreateTenantRequest(tenant=pb.Tenant(id=tenant_id, **fields)), metadata=AUTH)
    return tenant_id


async def new_key(stack: Stack, tenant_id: str, scope: int = pb.API_KEY_SCOPE_CLIENT, **fields: object) -> str:
    key = pb.ApiKey(tenant_id=tenant_id, scope=scope, display_name="test", **fields)
    response = await stack.api_keys.CreateApiKey(pb.CreateApiKeyRequest(api_key=key), metadata=AUTH)
    assert response.secret and response.api_key.secret_prefix == response.secret[:12]
    return response.secret


async def turn(stack: Stack, auth: Metadata, text: str = "hello budget", model: str = "scripted-a") -> pb.Message:
    """One unary turn in a new plain-model session."""
    session = await stack.sessions.CreateSession(
        pb.CreateSessionRequest(session=pb.Session(overrides=pb.SessionSettings(model=model))), metadata=auth
    )
    reply = await stack.sessions.SendMessage(
        pb.SendMessageRequest(session_id=session.session.id, messages=[user(text)]), metadata=auth
    )
    return reply.message


async def expect(call: object, code: grpc.StatusCode, reason: str) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    assert (caught.value.code(), error_reason(caught.value)) == (code, reason)
    return caught.value


async def test_tenants_see_only_their_own_resources(stack: Stack) -> None:
    alpha, beta = await new_tenant(stack), await new_tenant(stack)
    a, b = bearer(await new_key(stack, alpha)), bearer(await new_key(stack, beta))
    b_admin = bearer(await new_key(stack, beta, pb.API_KEY_SCOPE_ADMIN))
    a_key = await stack.api_keys.CreateApiKey(
        pb.CreateApiKeyRequest(api_key=pb.ApiKey(tenant_id=alpha, scope=pb.API_KEY_SCOPE_CLIENT)), metadata=AUTH
    )
    conversation = (
        await stack.conversations.CreateConversation(pb.CreateConversationRequest(), metadata=a)
    ).conversation
    session = (
        await stack.sessions.CreateSession(
            pb.CreateSessionRequest(
                session=pb.Session(conversation_id=conversation.id, overrides=pb.SessionSettings(model="scripted-a"))
            ),
            metadata=a,
        )
    ).session
    await stack.sessions.SendMessage(pb.SendMessageRequest(session_id=session.id, messages=[user("mine")]), metadata=a)

    not_found = grpc.StatusCode.NOT_FOUND
    await expect(
        stack.sessions.GetSession(pb.GetSessionRequest(session_id=session.id), metadata=b),
        not_found,
        "SESSION_NOT_FOUND",
    )
    await expect(
        stack.sessions.ListMessages(pb.ListMessagesRequest(session_id=session.id), metadata=b),
        not_found,
        "SESSION_NOT_FOUND",
    )
    await expect(
        stack.sessions.SendMessage(pb.SendMessageRequest(session_id=session.id, messages=[user("x")]), metadata=b),
        not_found,
        "SESSION_NOT_FOUND",
    )
    stream = stack.sessions.SendStreamingMessage(
        pb.SendStreamingMessageRequest(session_id=session.id, messages=[user("x")]), metadata=b
    )
    await expect(_drain(stream), not_found, "SESSION_NOT_FOUND")
    await expect(
        stack.conversations.GetConversation(pb.GetConversationRequest(conversation_id=conversation.id), metadata=b),
        not_found,
        "CONVERSATION_NOT_FOUND",
    )
    await expect(
        stack.sessions.CreateSession(
            pb.CreateSessionRequest(
                session=pb.Session(conversation_id=conversation.id, overrides=pb.SessionSettings(model="scripted-a"))
            ),
            metadata=b,
        ),
        not_found,
        "CONVERSATION_NOT_FOUND",
    )
    await expect(
        stack.api_keys.RevokeApiKey(pb.RevokeApiKeyRequest(api_key_id=a_key.api_key.id), metadata=b_admin),
        not_found,
        "API_KEY_NOT_FOUND",
    )
    await expect(
        stack.api_keys.ListApiKeys(pb.ListApiKeysRequest(tenant_id=alpha), metadata=b_admin),
        not_found,
        "TENANT_NOT_FOUND",
    )
    await expect(stack.usage.GetUsage(pb.GetUsageRequest(tenant_id=alpha), metadata=b), not_found, "TENANT_NOT_FOUND")
    listed = await stack.conversations.ListConversations(pb.ListConversationsRequest(page_size=100), metadata=b)
    assert conversation.id not in [c.id for c in listed.conversations]

    usage_b = await stack.usage.GetUsage(pb.GetUsageRequest(), metadata=b)
    assert usage_b.total.turns == 0
    usage_a = await stack.usage.GetUsage(
        pb.GetUsageRequest(group_by=[pb.USAGE_DIMENSION_TENANT, pb.USAGE_DIMENSION_SESSION]), metadata=a
    )
    assert [(r.tenant_id, r.session_id, r.turns) for r in usage_a.rows] == [(alpha, session.id, 1)]

    with pytest.raises(openai.NotFoundError):
        await stack.openai(api_key=b[0][1].split()[1]).chat.completions.create(
            model="scripted-a", messages=[{"role": "user", "content": "x"}], extra_headers={"X-Session-Id": session.id}
        )


async def _drain(call: object) -> None:
    async for _ in call:  # type: ignore[attr-defined]
        pass


async def test_client_keys_cannot_change_agents_or_tenants(stack: Stack) -> None:
    tenant = await new_tenant(stack)
    client = bearer(await new_key(stack, tenant))
    admin = bearer(await new_key(stack, tenant, pb.API_KEY_SCOPE_ADMIN))
    for auth in (client, admin):
        await expect(
            stack.agents.CreateAgent(
                pb.CreateAgentRequest(agent=pb.Agent(key="nope", default_model="m")), metadata=auth
            ),
            grpc.StatusCode.PERMISSION_DENIED,
            "OPERATOR_REQUIRED",
        )
        await expect(
            stack.tenants.CreateTenant(pb.CreateTenantRequest(tenant=pb.Tenant(id="nope")), metadata=auth),
            grpc.StatusCode.PERMISSION_DENIED,
            "OPERATOR_REQUIRED",
        )
    await expect(
        stack.api_keys.CreateApiKey(
            pb.CreateApiKeyRequest(api_key=pb.ApiKey(scope=pb.API_KEY_SCOPE_CLIENT)), metadata=client
        ),
        grpc.StatusCode.PERMISSION_DENIED,
        "ADMIN_REQUIRED",
    )
    created = await stack.api_keys.CreateApiKey(
        pb.CreateApiKeyRequest(api_key=pb.ApiKey(scope=pb.API_KEY_SCOPE_CLIENT)), metadata=admin
    )
    assert created.api_key.tenant_id == tenant


async def test_agents_restricted_to_tenants(stack: Stack, key: str) -> None:
    allowed, other = await new_tenant(stack), await new_tenant(stack)
    await stack.agents.CreateAgent(
        pb.CreateAgentRequest(agent=pb.Agent(key=key, default_model="scripted-a", allowed_tenants=[allowed])),
        metadata=AUTH,
    )
    ok = bearer(await new_key(stack, allowed))
    denied = bearer(await new_key(stack, other))
    assert (await stack.agents.GetAgent(pb.GetAgentRequest(agent_id=key), metadata=ok)).agent.key == key
    await expect(
        stack.agents.GetAgent(pb.GetAgentRequest(agent_id=key), metadata=denied),
        grpc.StatusCode.NOT_FOUND,
        "AGENT_NOT_FOUND",
    )
    await expect(
        stack.sessions.CreateSession(pb.CreateSessionRequest(session=pb.Session(agent_id=key)), metadata=denied),
        grpc.StatusCode.NOT_FOUND,
        "AGENT_NOT_FOUND",
    )
    listed = await stack.agents.ListAgents(pb.ListAgentsRequest(page_size=100), metadata=denied)
    assert key not in [a.key for a in listed.agents]


async def test_revoked_expired_malformed_and_deleted_tenant_keys_fail(stack: Stack) -> None:
    tenant = await new_tenant(stack)
    secret = await new_key(stack, tenant)
    auth = bearer(secret)
    await stack.conversations.ListConversations(pb.ListConversationsRequest(), metadata=auth)
    keys = await stack.api_keys.ListApiKeys(pb.ListApiKeysRequest(tenant_id=tenant), metadata=AUTH)
    await stack.api_keys.RevokeApiKey(pb.RevokeApiKeyRequest(api_key_id=keys.api_keys[0].id), metadata=AUTH)
    unauthenticated = grpc.StatusCode.UNAUTHENTICATED
    await expect(
        stack.conversations.ListConversations(pb.ListConversationsRequest(), metadata=auth),
        unauthenticated,
        "UNAUTHENTICATED",
    )
    with pytest.raises(openai.AuthenticationError):
        await stack.openai(api_key=secret).models.list()

    expire = timestamp_pb2.Timestamp()
    expire.FromDatetime(datetime.now(UTC) + timedelta(hours=1))
    expiring = bearer(await new_key(stack, tenant, expire_time=expire))
    await stack.conversations.ListConversations(pb.ListConversationsRequest(), metadata=expiring)
    with time_machine.travel(datetime.now(UTC) + timedelta(hours=2)):
        await expect(
            stack.conversations.ListConversations(pb.ListConversationsRequest(), metadata=expiring),
            unauthenticated,
            "UNAUTHENTICATED",
        )
    for malformed in (bearer("x" * 300), bearer("sk-aa-not-a-key"), (("authorization", "Basic dXNlcjpwdw=="),)):
        await expect(
            stack.conversations.ListConversations(pb.ListConversationsRequest(), metadata=malformed),
            unauthenticated,
            "UNAUTHENTICATED",
        )

    doomed = await new_tenant(stack)
    doomed_key = bearer(await new_key(stack, doomed))
    await stack.tenants.DeleteTenant(pb.DeleteTenantRequest(tenant_id=doomed), metadata=AUTH)
    await expect(
        stack.conversations.ListConversations(pb.ListConversationsRequest(), metadata=doomed_key),
        unauthenticated,
        "UNAUTHENTICATED",
    )


async def test_out_of_range_budget_names_every_field(stack: Stack) -> None:
    tenant = pb.Tenant(
        id="Bad Id",
        budget=pb.Budget(max_tokens=0, max_cost_usd=-1),
        rate_limits=pb.RateLimits(requests_per_minute=-5),
    )
    error = await expect(
        stack.tenants.CreateTenant(pb.CreateTenantRequest(tenant=tenant), metadata=AUTH),
        grpc.StatusCode.INVALID_ARGUMENT,
        "FIELD_VIOLATION",
    )
    assert set(field_violations(error)) == {
        "tenant.id",
        "tenant.budget.max_tokens",
        "tenant.budget.max_cost_usd",
        "tenant.rate_limits.requests_per_minute",
    }


async def test_litellm_cost_is_recorded_exactly(stack: Stack) -> None:
    tenant = await new_tenant(stack)
    auth = bearer(await new_key(stack, tenant))
    session = (
        await stack.sessions.CreateSession(
            pb.CreateSessionRequest(session=pb.Session(overrides=pb.SessionSettings(model="scripted-a"))), metadata=auth
        )
    ).session
    events = [
        e
        async for e in stack.sessions.SendStreamingMessage(
            pb.SendStreamingMessageRequest(session_id=session.id, messages=[user("what does this cost")]), metadata=auth
        )
    ]
    usage = events[-1].assistant_message.usage
    expected = (
        usage.prompt_tokens * PRICES["input_cost_per_token"] + usage.completion_tokens * PRICES["output_cost_per_token"]
    )
    assert usage.cost_usd == pytest.approx(expected, rel=1e-9) and usage.cost_usd > 0
    report = await stack.usage.GetUsage(pb.GetUsageRequest(group_by=[pb.USAGE_DIMENSION_MODEL]), metadata=auth)
    assert [(r.model, r.turns) for r in report.rows] == [("scripted-a", 1)]
    assert report.total.cost_usd == pytest.approx(expected, rel=1e-9)
    day = datetime.now(UTC).strftime("%Y-%m-%d")
    by_day = await stack.usage.GetUsage(pb.GetUsageRequest(group_by=[pb.USAGE_DIMENSION_DAY]), metadata=auth)
    assert [r.day for r in by_day.rows] == [day]


async def test_token_budget_trips_at_the_right_turn_and_resets_next_period(stack: Stack) -> None:
    probe = bearer(await new_key(stack, await new_tenant(stack)))
    first = await turn(stack, probe)
    per_turn = first.usage.total_tokens
    # The budget check counts the new message as stored: chars / 4 plus the per-message overhead.
    prompt_estimate = (len("hello budget") + 3) // 4 + MESSAGE_OVERHEAD
    tenant = await new_tenant(
        stack, budget=pb.Budget(period=pb.BUDGET_PERIOD_DAY, max_tokens=2 * per_turn + prompt_estimate)
    )
    auth = bearer(await new_key(stack, tenant))
    now = datetime.now(UTC).replace(hour=12, minute=0)
    with time_machine.travel(now, tick=True):
        for _ in range(3):
            await turn(stack, auth)
        error = await expect(turn(stack, auth), grpc.StatusCode.RESOURCE_EXHAUSTED, "BUDGET_EXCEEDED")
        assert 0 < errors_retry_delay(error) <= 12 * 3600
        with pytest.raises(openai.RateLimitError) as over:
            await stack.openai(api_key=auth[0][1].split()[1]).chat.completions.create(
                model="scripted-a", messages=[{"role": "user", "content": "hello budget"}]
            )
        assert over.value.body["type"] == over.value.body["code"] == "insufficient_quota"
    with time_machine.travel(now + timedelta(days=1), tick=True):
        assert (await turn(stack, auth)).status == pb.MESSAGE_STATUS_COMPLETED


def errors_retry_delay(error: grpc.aio.AioRpcError) -> float:
    from agentapi import errors

    delay = errors.from_rpc_error(error).retry_delay_s
    assert delay is not None
    return delay


async def test_cost_budget_counts_recorded_spend(stack: Stack) -> None:
    probe = bearer(await new_key(stack, await new_tenant(stack)))
    cost = (await turn(stack, probe)).usage.cost_usd
    tenant = await new_tenant(stack, budget=pb.Budget(period=pb.BUDGET_PERIOD_MONTH, max_cost_usd=cost * 2.5))
    auth = bearer(await new_key(stack, tenant))
    for _ in range(3):
        await turn(stack, auth)
    await expect(turn(stack, auth), grpc.StatusCode.RESOURCE_EXHAUSTED, "BUDGET_EXCEEDED")


async def test_requests_per_minute_trip_and_reset(stack: Stack) -> None:
    tenant = await new_tenant(stack, rate_limits=pb.RateLimits(requests_per_minute=2))
    auth = bearer(await new_key(stack, tenant))
    start = datetime.now(UTC)
    with time_machine.travel(start, tick=True):
        await turn(stack, auth)
        await turn(stack, auth)
        error = await expect(turn(stack, auth), grpc.StatusCode.RESOURCE_EXHAUSTED, "RATE_LIMITED")
        assert 0 < errors_retry_delay(error) <= 60
        with pytest.raises(openai.RateLimitError) as limited:
            await stack.openai(api_key=auth[0][1].split()[1]).chat.completions.create(
                model="scripted-a", messages=[{"role": "user", "content": "hi"}]
            )
        assert int(limited.value.response.headers["retry-after"]) >= 1
    with time_machine.travel(start + timedelta(seconds=61), tick=True):
        await turn(stack, auth)


async def test_tokens_per_minute_trip_after_a_full_window(stack: Stack) -> None:
    tenant = await new_tenant(stack, rate_limits=pb.RateLimits(tokens_per_minute=5))
    auth = bearer(await new_key(stack, tenant))
    start = datetime.now(UTC)
    with time_machine.travel(start, tick=True):
        assert (await turn(stack, auth)).usage.total_tokens >= 5
        await expect(turn(stack, auth), grpc.StatusCode.RESOURCE_EXHAUSTED, "RATE_LIMITED")
    with time_machine.travel(start + timedelta(seconds=61), tick=True):
        await turn(stack, auth)


async def test_update_tenant_changes_limits(stack: Stack) -> None:
    tenant = await new_tenant(stack)
    updated = await stack.tenants.UpdateTenant(
        pb.UpdateTenantRequest(
            tenant=pb.Tenant(id=tenant, display_name="ignored", rate_limits=pb.RateLimits(requests_per_minute=7)),
            update_mask=field_mask_pb2.FieldMask(paths=["rate_limits"]),
        ),
        metadata=AUTH,
    )
    assert updated.tenant.rate_limits.requests_per_minute == 7 and updated.tenant.display_name == ""


async def test_api_keys_over_the_bridge(stack: Stack) -> None:
    tenant = await new_tenant(stack)
    async with stack.http() as admin:
        created = await admin.post("/agentapi/v1/apiKeys", json={"tenantId": tenant, "scope": "API_KEY_SCOPE_CLIENT"})
        assert created.status_code == 200
        secret, key_id = created.json()["secret"], created.json()["apiKey"]["id"]
        listed = await admin.get("/agentapi/v1/apiKeys", params={"tenantId": tenant})
        assert [k["id"] for k in listed.json()["apiKeys"]] == [key_id]
        assert secret not in listed.text and secret[12:] not in listed.text
        client = stack.openai(api_key=secret)
        completion = await client.chat.completions.create(
            model="scripted-a", messages=[{"role": "user", "content": "hi"}]
        )
        assert completion.choices[0].message.content == "Echo: hi"
        async with stack.http() as raw:
            denied = await raw.post(
                "/agentapi/v1/agents",
                json={"key": "client-made", "defaultModel": "scripted-a"},
                headers={"Authorization": f"Bearer {secret}"},
            )
        assert denied.status_code == 403 and denied.json()["error"]["code"] == "operator_required"
        revoked = await admin.post(f"/agentapi/v1/apiKeys/{key_id}:revoke", json={})
        assert revoked.status_code == 200 and revoked.json()["apiKey"]["revokeTime"]
    with pytest.raises(openai.AuthenticationError):
        await client.chat.completions.create(model="scripted-a", messages=[{"role": "user", "content": "hi"}])
