"""ListAgents per AIP-132/158/160: filters, and keyset paging in both
directions that stays stable while agents are created and deleted."""

from __future__ import annotations

import asyncio
import uuid

import grpc
import pytest

from agentapi import v1 as pb
from tests.helpers import create_agent, error_reason, field_violations
from tests.stack import AUTH, Stack


async def _list(stack: Stack, filter_text: str, page_size: int = 0, token: str = "") -> pb.ListAgentsResponse:
    return await stack.agents.ListAgents(
        pb.ListAgentsRequest(filter=filter_text, page_size=page_size, page_token=token), metadata=AUTH
    )


def _prefix() -> str:
    return f"ls-{uuid.uuid4().hex[:8]}"


async def test_filter_by_key_display_name_and_model(offline_stack: Stack) -> None:
    prefix = _prefix()
    await create_agent(offline_stack, f"{prefix}-a", model="m-one", display_name="Support bot")
    await create_agent(offline_stack, f"{prefix}-b", model="m-two", fallback_models=["m-one"], display_name="Sales")
    await create_agent(offline_stack, f"{prefix}-c", model="m-three", display_name="support desk")

    async def keys(expression: str) -> list[str]:
        return [a.key.removeprefix(f"{prefix}-") for a in (await _list(offline_stack, expression)).agents]

    assert await keys(f'key = "{prefix}-*"') == ["a", "b", "c"]
    assert await keys(f'key = "{prefix}-b"') == ["b"]
    assert await keys(f'key = "{prefix}-*" AND model = "m-one"') == ["a", "b"]
    assert await keys(f'key = "{prefix}-*" AND default_model = "m-one"') == ["a"]
    assert await keys(f'key = "{prefix}-*" AND NOT model = "m-one"') == ["c"]
    assert await keys(f'key = "{prefix}-*" AND display_name : "upport"') == ["a", "c"]
    # AIP-160: OR binds tighter than AND.
    assert await keys(f'key = "{prefix}-*" AND model = "m-two" OR model = "m-three"') == ["b", "c"]
    assert await keys(f'key = "{prefix}-*" AND -(key = "{prefix}-a")') == ["b", "c"]


@pytest.mark.parametrize(
    "expression",
    ['colour = "red"', 'key = "unterminated', "key ~ x", "key = ", "AND", 'model > "x"', "x" * 1001],
)
async def test_bad_filter_names_the_filter_field(offline_stack: Stack, expression: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _list(offline_stack, expression)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_reason(caught.value) == "INVALID_FILTER"
    assert field_violations(caught.value) == ["filter"]


async def test_page_token_is_bound_to_its_filter(offline_stack: Stack) -> None:
    prefix = _prefix()
    for index in range(3):
        await create_agent(offline_stack, f"{prefix}-{index}", model="agentapi-offline")
    first = await _list(offline_stack, f'key = "{prefix}-*"', page_size=2)
    assert first.next_page_token and not first.previous_page_token
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _list(offline_stack, f'key = "{prefix}-0"', page_size=2, token=first.next_page_token)
    assert error_reason(caught.value) == "INVALID_PAGE_TOKEN"


async def test_paging_forwards_and_backwards_under_concurrent_writes(stack: Stack) -> None:
    """Every agent that exists throughout is seen exactly once in each
    direction, while other agents are created and deleted between pages."""
    prefix = _prefix()
    expression = f'key = "{prefix}-*"'
    stable = [(await create_agent(stack, f"{prefix}-s{index:02d}")).id for index in range(11)]
    churn = [(await create_agent(stack, f"{prefix}-d{index:02d}")).id for index in range(4)]

    async def writer(step: int) -> None:
        await create_agent(stack, f"{prefix}-n{step:02d}")
        if churn:
            await stack.agents.DeleteAgent(pb.DeleteAgentRequest(agent_id=churn.pop()), metadata=AUTH)

    forward: list[str] = []
    pages: list[pb.ListAgentsResponse] = []
    token = ""
    step = 0
    while True:
        page, _ = await asyncio.gather(_list(stack, expression, page_size=4, token=token), writer(step))
        step += 1
        pages.append(page)
        forward += [agent.id for agent in page.agents]
        token = page.next_page_token
        if not token:
            break
    assert len(forward) == len(set(forward)), "a row was repeated going forwards"
    assert [i for i in forward if i in stable] == stable, "a stable row was skipped or reordered"
    assert not pages[0].previous_page_token and all(p.previous_page_token for p in pages[1:])

    backward: list[str] = []
    token = pages[-1].previous_page_token
    while token:
        page, _ = await asyncio.gather(_list(stack, expression, page_size=4, token=token), writer(step))
        step += 1
        backward = [agent.id for agent in page.agents] + backward
        assert page.next_page_token, "a page reached backwards must lead forwards again"
        token = page.previous_page_token
    seen = backward + [agent.id for agent in pages[-1].agents]
    assert len(seen) == len(set(seen)), "a row was repeated going backwards"
    assert [i for i in seen if i in stable] == stable
