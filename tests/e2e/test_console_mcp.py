"""The console with a real MCP server (the official SDK's, over streamable HTTP):
the MCP page lists its tools with their definition hashes, and a call that
waits for approval is approved by hand in the playground."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from playwright.async_api import expect

from agentapi import v1 as pb
from tests.e2e.conftest import Console
from tests.helpers import create_agent
from tests.stack import AUTH, Stack
from tests.support.mcp_servers import HttpMcpServer

expect.set_options(timeout=15_000)


@pytest.fixture(scope="module")
def mcp_server() -> Iterator[HttpMcpServer]:
    with HttpMcpServer() as server:
        yield server


async def test_an_mcp_call_approved_by_hand(console: Console, offline_stack: Stack, mcp_server: HttpMcpServer) -> None:
    server_id = f"console-{uuid.uuid4().hex[:8]}"
    servers = pb.McpServerServiceStub(offline_stack.channel)
    await servers.CreateMcpServer(
        pb.CreateMcpServerRequest(
            mcp_server=pb.McpServer(
                id=server_id, display_name="Test tools", transport=pb.MCP_TRANSPORT_STREAMABLE_HTTP, url=mcp_server.url
            )
        ),
        metadata=AUTH,
    )
    await servers.ApproveMcpServerTools(pb.ApproveMcpServerToolsRequest(mcp_server_id=server_id), metadata=AUTH)
    entry = pb.AgentMcpServer(server_id=server_id, require_approval=pb.APPROVAL_MODE_ALWAYS)
    agent = await create_agent(
        offline_stack, f"agent-{uuid.uuid4().hex[:10]}", model="agentapi-offline", mcp_servers=[entry]
    )

    await console.sign_in()
    page = console.page
    await console.open("/mcp")
    card = page.locator("section.card").filter(has_text=server_id)
    await card.get_by_role("button", name="Show tools").click()
    add = card.get_by_role("row", name="add Adds two integers.")
    await expect(add.locator(".badge")).to_have_text("approved")
    assert len((await add.locator("td").nth(2).inner_text()).strip()) >= 16  # the definition hash
    await console.shot("mcp-servers")

    await console.open(f"/playground?agent={agent.id}")
    await page.fill("#pg-input", f'call {server_id}__add {{"a": 4, "b": 5}}')
    await page.click("form.composer button[type=submit]")
    form = page.locator("form.action-form")
    await expect(form).to_contain_text(f"{server_id}__add")
    await expect(page.locator(".chat .tool-call .badge").filter(has_text="awaiting approval")).to_be_visible()
    await form.get_by_label("Approve").check()
    await console.shot("playground-approval")
    await form.get_by_role("button", name="Submit").click()
    reply = page.locator(".chat article.role-assistant").last.locator(".content")
    await expect(reply).to_have_text(f"Tool {server_id}__add returned: 9")
    await expect(page.locator(".chat article.role-tool .badge").last).to_have_text(f"mcp:{server_id}")
