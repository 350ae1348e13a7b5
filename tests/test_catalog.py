"""The model catalog against a real upstream whose model list the test
changes: background refresh, staleness, and `unsupported_models`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from agentapi import v1 as pb
from tests.helpers import create_agent
from tests.stack import AUTH, Stack, start_stack
from tests.support import upstream as upstream_module
from tests.support.upstream import ScriptedUpstream

REFRESH_S = 0.2


@pytest.fixture
def own_upstream() -> Iterator[ScriptedUpstream]:
    """An upstream this test may stop without disturbing the others."""
    with ScriptedUpstream() as server:
        yield server


@pytest.fixture
async def fast_stack(sqlite_url: str, own_upstream: ScriptedUpstream) -> AsyncIterator[Stack]:
    stack = await start_stack(sqlite_url, llm_base_url=own_upstream.base_url, catalog_ttl_s=REFRESH_S)
    yield stack
    await stack.stop()


async def _eventually(check: Any, timeout_s: float = 10.0) -> Any:
    """Polls ``check()`` until it returns something truthy."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        result = await check()
        if result or asyncio.get_running_loop().time() > deadline:
            return result
        await asyncio.sleep(REFRESH_S / 2)


async def test_unsupported_models_follow_the_catalog(
    fast_stack: Stack, key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    agent = await create_agent(fast_stack, key, model="scripted-a", fallback_models=["scripted-b", "model-x"])
    assert list(agent.unsupported_models) == ["model-x"]

    monkeypatch.setattr(upstream_module, "MODEL_IDS", ("scripted-a", "model-x"))

    async def flagged() -> list[str]:
        got = (await fast_stack.agents.GetAgent(pb.GetAgentRequest(agent_id=key), metadata=AUTH)).agent
        return list(got.unsupported_models) if list(got.unsupported_models) == ["scripted-b"] else []

    assert await _eventually(flagged) == ["scripted-b"]
    listed = await fast_stack.models.ListModels(pb.ListModelsRequest(), metadata=AUTH)
    assert [m.id for m in listed.models] == ["model-x", "scripted-a"]
    assert not listed.stale


async def test_a_failed_refresh_serves_the_last_catalog_marked_stale(
    fast_stack: Stack, own_upstream: ScriptedUpstream
) -> None:
    fresh = await fast_stack.models.ListModels(pb.ListModelsRequest(), metadata=AUTH)
    assert not fresh.stale and fresh.refresh_time.seconds > 0
    own_upstream.stop()

    async def stale() -> pb.ListModelsResponse | None:
        listed = await fast_stack.models.ListModels(pb.ListModelsRequest(), metadata=AUTH)
        return listed if listed.stale else None

    listed = await _eventually(stale)
    assert listed is not None, "the catalog never reported itself stale"
    assert [m.id for m in listed.models] == [m.id for m in fresh.models]
    await asyncio.sleep(REFRESH_S * 3)
    later = await fast_stack.models.ListModels(pb.ListModelsRequest(), metadata=AUTH)
    assert later.stale and later.refresh_time == listed.refresh_time, "refresh_time is the last good fetch"
