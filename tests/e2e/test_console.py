"""The web console in a real browser (Debian's Chromium, headless) against
agentapi with the offline model: sign in, agents, the playground's streamed
turns with server and client tools, the transcript, usage, what a client key
sees, and model replies rendered as sanitized Markdown in which markup stays text."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from playwright.async_api import expect

from agentapi import v1 as pb
from tests.e2e.conftest import Console
from tests.helpers import create_agent, create_session, user
from tests.stack import AUTH, MASTER_KEY, Stack

expect.set_options(timeout=15_000)  # a loaded CI machine runs the server and the browser on 2 cores

WEATHER_SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}


async def _agent(stack: Stack, key: str) -> pb.Agent:
    """An offline agent with the calculator built in and a client tool."""
    tool = pb.Tool(type="function", function=pb.FunctionDefinition(name="get_weather", description="Weather"))
    tool.function.parameters.update(WEATHER_SCHEMA)
    return await create_agent(stack, key, model="agentapi-offline", builtin_tools=["calculator"], tools=[tool])


# Records every state of the live reply: its streamed text and its tool steps.
WATCH_LIVE = """() => {
  window.__live = { content: [], steps: [] };
  new MutationObserver(() => {
    const live = document.querySelector(".live");
    if (!live) return;
    const text = live.querySelector(".streaming")?.textContent || "";
    if (window.__live.content.at(-1) !== text) window.__live.content.push(text);
    for (const step of live.querySelectorAll(".step")) window.__live.steps.push(step.textContent);
  }).observe(document.body, { subtree: true, childList: true, characterData: true });
}"""


async def _slow_link(page: Any, bytes_per_second: int) -> None:
    """Chromium's network emulation: a slow link spreads a turn's events out, as a
    real model's would be; over loopback the offline model's arrive in one read."""
    cdp = await page.context.new_cdp_session(page)
    await cdp.send("Network.enable")
    await cdp.send(
        "Network.emulateNetworkConditions",
        {"offline": False, "latency": 0, "downloadThroughput": bytes_per_second, "uploadThroughput": -1},
    )


async def _send(console: Console, text: str) -> None:
    await console.page.fill("#pg-input", text)
    await console.page.click("form.composer button[type=submit]")


async def test_sign_in_shows_operator_pages(console: Console) -> None:
    page = console.page
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    await page.goto(f"{console.base_url}/console/")
    # The sign-in page as a user meets it: a heading, a labelled key field that hides what is typed.
    await expect(page.get_by_role("heading", level=1)).to_have_text("agentapi console")
    field = page.get_by_label("API key")
    await expect(field).to_have_attribute("type", "password")
    await expect(field).to_have_attribute("id", "api-key")
    await expect(field).to_be_empty()
    await expect(field).to_be_focused()  # autofocus: the key can be typed (or pasted) at once
    await expect(page.get_by_role("button", name="Sign in")).to_be_enabled()
    await console.shot("sign-in")
    await field.fill(MASTER_KEY)
    await page.keyboard.press("Enter")  # keyboard only: the form submits on Enter
    nav = page.locator("nav[aria-label=Console]")
    await expect(nav).to_be_visible()
    # The key goes in a header, never in a URL: not the page's, not any request's.
    assert MASTER_KEY not in page.url, page.url
    assert requested and not [url for url in requested if MASTER_KEY in url], requested
    for label in ("Agents", "Models", "Conversations", "Playground", "Usage", "Tenants", "API keys", "MCP servers"):
        await expect(nav.get_by_role("link", name=label, exact=True)).to_be_visible()
    await expect(console.page.locator(".who")).to_have_text("operator")
    # Keyboard only: Tab reaches the navigation, Enter follows a link, and focus lands on the page.
    for _ in range(12):
        await console.page.keyboard.press("Tab")
        if await console.page.evaluate("document.activeElement.textContent") == "Usage":
            break
    await console.page.keyboard.press("Enter")
    await expect(console.page.locator("#page-title")).to_have_text("Usage")
    await expect(console.page.locator("#page-title")).to_be_focused()
    await console.open("/models")
    await expect(console.page.get_by_text("agentapi-offline").first).to_be_visible()
    await console.shot("models")
    for route, name in (("/tenants", "tenants"), ("/keys", "api-keys"), ("/mcp", "mcp-servers")):
        await console.open(route)
        await expect(console.page.locator(".error")).to_have_count(0)
        await console.shot(name)
    assert MASTER_KEY not in page.url and not [url for url in requested if MASTER_KEY in url], requested


async def test_a_wrong_key_is_refused(console: Console) -> None:
    await console.page.goto(f"{console.base_url}/console/")
    await console.page.fill("#api-key", "sk-not-a-key")
    await console.page.keyboard.press("Enter")
    await expect(console.page.get_by_role("alert")).to_contain_text("invalid")
    assert await console.page.evaluate("sessionStorage.length") == 0


async def test_create_agent_with_a_tool(console: Console, key: str) -> None:
    await console.sign_in()
    await console.open("/agents/new")
    page = console.page
    await page.fill("#agent-key", key)
    await page.fill("#agent-name", "Weather helper")
    await page.fill("#agent-prompt", "Answer about the weather.")
    await page.get_by_label("calculator").check()
    await page.click("text=Add tool")
    await page.fill("#tool-0-name", "get_weather")
    # The schema is checked as it is typed: broken JSON disables saving.
    await page.fill("#tool-0-params", '{"type": "object", "properties": {')
    await expect(page.locator("#tool-0-problems")).to_contain_text("not JSON")
    await expect(page.get_by_role("button", name="Create agent")).to_be_disabled()
    await page.fill("#tool-0-params", json.dumps({**WEATHER_SCHEMA, "required": ["town"]}))
    await expect(page.locator("#tool-0-problems")).to_contain_text('"town" is not a property')
    await page.fill("#tool-0-params", json.dumps(WEATHER_SCHEMA, indent=2))
    await expect(page.locator("#tool-0-problems li")).to_have_count(0)
    await page.select_option("#agent-routing", "ROUTING_MODE_AUTO")
    await page.get_by_role("button", name="Create agent").click()
    await expect(page.locator("#page-title")).to_have_text(f"Agent {key}")
    await expect(page.locator("#tool-0-name")).to_have_value("get_weather")
    await expect(page.locator("#agent-routing")).to_have_value("ROUTING_MODE_AUTO")

    # An edit makes revision 2, and the diff shows what changed.
    await page.fill("#agent-fallbacks", "no-such-model")
    await page.get_by_role("button", name="Save").click()
    await expect(page.get_by_role("status").filter(has_text="no-such-model")).to_be_visible()
    await expect(page.locator("table.diff")).to_contain_text("fallbackModels")
    await console.shot("agent-edit")

    await console.open("/agents")
    await page.fill("#agent-filter", f'key = "{key}"')
    await page.click("text=Apply")
    await expect(page.locator("tbody tr")).to_have_count(1)
    await expect(page.locator("tbody tr .badge.warn")).to_contain_text("unsupported: no-such-model")
    await console.shot("agents")

    # Soft delete (AIP-164): gone from the list, back with "Show deleted", and undeleted.
    await page.get_by_role("button", name="Delete").click()
    await expect(page.locator("tbody tr")).to_have_count(0)
    await page.get_by_label("Show deleted").check()
    await expect(page.locator("tbody tr.deleted")).to_have_count(1)
    await page.get_by_role("button", name="Undelete").click()
    await expect(page.locator("tbody tr.deleted")).to_have_count(0)
    await expect(page.locator("tbody tr")).to_have_count(1)


async def test_playground_streams_a_server_tool_step_then_the_transcript_shows_it(
    console: Console, offline_stack: Stack, key: str
) -> None:
    agent = await _agent(offline_stack, key)
    await console.sign_in()
    await console.open(f"/playground?agent={agent.id}")
    page = console.page
    await expect(page.locator("#pg-target")).to_have_value(f"agent:{agent.id}")
    await page.select_option("#pg-reasoning", "low")
    # What the live reply showed while it streamed, recorded in the page as it changed.
    await page.evaluate(WATCH_LIVE)
    await _slow_link(page, 20_000)
    words = " ".join(f"word{i}" for i in range(300))
    await _send(console, words)
    await expect(page.locator(".chat article.role-assistant").last.locator(".content")).to_have_text(
        f"You said: {words}"
    )
    seen = await page.evaluate("window.__live")
    partial = [text for text in seen["content"] if text and text != f"You said: {words}"]
    assert len(partial) >= 3, seen  # token by token, not all at once
    assert all(f"You said: {words}".startswith(text) for text in partial)

    await page.get_by_role("button", name="New chat").click()
    await page.evaluate(WATCH_LIVE)
    await _send(console, 'please use calculator {"expression": "6*7"} and tell me the result')
    reply = page.locator(".chat article.role-assistant").last
    await expect(reply.locator(".content")).to_have_text("Tool calculator returned: 42")
    await expect(page.locator(".chat article.role-tool")).to_contain_text("calculator")
    await expect(page.locator(".chat article.role-tool .badge")).to_have_text("builtin")
    # Once the turn ends the playground shows the stored messages, the step's tool call among them.
    await expect(page.locator(".chat .tool-call[data-tool=calculator]")).to_be_visible()
    await expect(page.locator(".chat .reasoning").first).to_contain_text("Thinking about")
    seen = await page.evaluate("window.__live")
    assert any("calculator" in step for step in seen["steps"]), seen  # the tool step showed while running
    await console.shot("playground")

    await page.get_by_role("link", name="Open transcript").click()
    await expect(page.locator("#page-title")).to_have_text("Transcript")
    call = page.locator("article.role-assistant .tool-call[data-tool=calculator]")
    await expect(call).to_contain_text('{"expression":"6*7"}')
    await expect(call.locator(".badge")).to_have_text("builtin")
    await expect(page.locator("article.role-tool .content")).to_have_text("42")
    await expect(page.locator("article.role-assistant").last.locator(".meta")).to_contain_text("agentapi-offline")
    await console.shot("transcript")
    for label, expected in (("Export Markdown", "Tool calculator returned: 42"), ("Export JSONL", '"role"')):
        async with page.expect_download() as downloading:
            await page.get_by_role("button", name=label).click()
        exported = await (await downloading.value).path()
        assert expected in Path(exported).read_text(), label


async def test_the_transcript_exports_as_openai_json(console: Console, offline_stack: Stack, key: str) -> None:
    agent = await _agent(offline_stack, key)
    session = await create_session(offline_stack, agent.id)
    await offline_stack.sessions.SendMessage(
        pb.SendMessageRequest(session_id=session.id, messages=[user('use calculator {"expression": "6*7"}')]),
        metadata=AUTH,
    )
    await console.sign_in()
    await console.open(f"/sessions/{session.id}")
    page = console.page
    await expect(page.locator("article.role-tool .content")).to_have_text("42")
    # Downloaded as the user gets it: the button's file, saved by the browser.
    async with page.expect_download() as downloading:
        await page.get_by_role("button", name="Export OpenAI JSON").click()
    download = await downloading.value
    assert download.suggested_filename == f"session-{session.id}.json"
    await expect(page.locator(".error")).to_have_count(0)
    exported = json.loads(Path(await download.path()).read_text())
    assert exported["model"] == "agentapi-offline"
    assert exported["session"]["id"] == session.id
    messages = exported["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "tool", "assistant"], messages
    asked, calling, answered, replied = messages
    assert asked["content"] == 'use calculator {"expression": "6*7"}'
    # OpenAI's chat shape: the assistant's tool call, and the tool message answering it by id.
    (call,) = calling["tool_calls"]
    assert call["type"] == "function" and call["id"], call
    assert call["function"]["name"] == "calculator"
    assert json.loads(call["function"]["arguments"]) == {"expression": "6*7"}
    assert answered["tool_call_id"] == call["id"]
    assert answered["content"] == "42"
    assert replied["content"] == "Tool calculator returned: 42"
    assert "tool_calls" not in replied
    # The ledger beside the messages: one row per stored message.
    assert len(exported["ledger"]) == len(messages)


async def test_a_client_tool_output_entered_by_hand(console: Console, offline_stack: Stack, key: str) -> None:
    agent = await _agent(offline_stack, key)
    await console.sign_in()
    await console.open(f"/playground?agent={agent.id}")
    await _send(console, 'call get_weather {"city": "Paris"}')
    page = console.page
    await expect(page.locator(".chat article.role-assistant").last).to_have_attribute("data-status", "REQUIRES_ACTION")
    form = page.locator("form.action-form")
    await expect(form).to_contain_text("get_weather")
    await form.locator("textarea.tool-output").fill("sunny, 21 C")
    await console.shot("playground-client-tool")
    await form.get_by_role("button", name="Submit").click()
    await expect(page.locator(".chat article.role-assistant").last.locator(".content")).to_have_text(
        "Tool get_weather returned: sunny, 21 C"
    )
    await expect(form).to_have_count(0)

    # The playground's session is an ordinary stored one: it is listed under its conversation.
    await page.get_by_role("link", name="Open transcript").click()
    await page.get_by_role("link", name="conversation", exact=True).click()
    await expect(page.locator("tbody tr")).to_have_count(1)
    await console.shot("sessions")
    await console.open("/conversations")
    await expect(page.locator("tbody tr").first).to_contain_text("Playground")
    await console.shot("conversations")


async def test_cancel_stops_the_stream(console: Console, offline_stack: Stack) -> None:
    await console.sign_in()
    await console.open("/playground")
    page = console.page
    await page.select_option("#pg-target", "model:agentapi-offline")
    await _slow_link(page, 5_000)
    async with page.expect_request(re.compile(r"/messages/[^/]+:cancel$")) as cancelled:
        await _send(console, " ".join(f"word{i}" for i in range(400)))
        await expect(page.locator(".live .streaming")).to_contain_text("word1")
        await page.get_by_role("button", name="Cancel").click()
    # CancelTurn names the turn's reply, from its turnStarted event; the fetch is aborted too.
    assert (await cancelled.value).method == "POST"
    await expect(page.locator(".live")).to_contain_text("Stopped.")
    await expect(page.get_by_role("button", name="Cancel")).to_have_count(0)


async def test_a_reply_with_markup_is_shown_as_text(console: Console, offline_stack: Stack) -> None:
    await console.sign_in()
    await console.open("/playground")
    page = console.page
    await page.select_option("#pg-target", "model:agentapi-offline")
    payload = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">'
    await _send(console, payload)
    reply = page.locator(".chat article.role-assistant").last.locator(".content")
    await expect(reply).to_have_text(f"You said: {payload}")
    await _assert_inert(page, ".chat")
    # The stored reply in the transcript: the same text, just as inert.
    await page.get_by_role("link", name="Open transcript").click()
    await expect(page.locator("article.role-assistant .content")).to_have_text(f"You said: {payload}")
    await _assert_inert(page, ".transcript")


async def _assert_inert(page: Any, scope: str) -> None:
    """No script ran, and nothing with a script hook reached the DOM."""
    assert await page.evaluate("window.__pwned === undefined")
    assert await page.locator(f"{scope} script, {scope} img, {scope} iframe").count() == 0
    assert await page.locator(f"{scope} [onerror], {scope} [onclick], {scope} [onload], {scope} [style]").count() == 0
    assert await page.locator('a[href^="javascript:" i]').count() == 0


# Records whether the live reply was already Markdown (a list, bold text) while it streamed.
WATCH_MARKDOWN = """() => {
  window.__md = { items: 0, strong: false };
  new MutationObserver(() => {
    const live = document.querySelector(".live .streaming");
    if (!live) return;
    window.__md.items = Math.max(window.__md.items, live.querySelectorAll("li").length);
    window.__md.strong ||= Boolean(live.querySelector("strong"));
  }).observe(document.body, { subtree: true, childList: true, characterData: true });
}"""

MARKDOWN = "\n".join(
    (
        "**bold** and *slanted* with `inline code`",
        "",
        "- first item",
        "- second item",
        "",
        "```",
        'print("<b>not bold</b>")',
        "```",
        "",
        "| a | b |",
        "| - | - |",
        "| 1 | 2 |",
        "",
        "[a site](https://example.com/docs) [a trap](javascript:window.__pwned=3) ![a pixel](https://example.com/p.png)",
        "",
        '<div onclick="window.__pwned = 4">raw html</div>',
    )
)


async def test_a_reply_in_markdown_renders_as_elements(console: Console, offline_stack: Stack) -> None:
    await console.sign_in()
    await console.open("/playground")
    page = console.page
    await page.select_option("#pg-target", "model:agentapi-offline")
    await page.select_option("#pg-reasoning", "low")  # the offline model echoes the text as reasoning too
    await page.evaluate(WATCH_MARKDOWN)
    await _slow_link(page, 20_000)
    await _send(console, MARKDOWN)
    reply = page.locator(".chat article.role-assistant").last
    await expect(reply.locator(".content ul > li")).to_have_count(2)
    # Re-rendered as the text grew: the list and the bold text showed before the reply was stored.
    seen = await page.evaluate("window.__md")
    assert seen["items"] >= 1 and seen["strong"], seen
    await _assert_markdown(reply)
    await expect(reply.locator(".reasoning strong")).to_have_text("bold")
    await _assert_inert(page, ".chat")
    await console.shot("playground-markdown")

    await page.get_by_role("link", name="Open transcript").click()
    stored = page.locator("article.role-assistant").last
    await _assert_markdown(stored)
    await _assert_inert(page, ".transcript")
    # The user's own message stays plain text.
    await expect(page.locator("article.role-user .content")).to_contain_text("**bold**")
    await console.shot("transcript-markdown")


async def _assert_markdown(reply: Any) -> None:
    content = reply.locator(".content")
    await expect(content.locator("strong")).to_have_text("bold")
    await expect(content.locator("em")).to_have_text("slanted")
    await expect(content.locator("p code")).to_have_text("inline code")
    await expect(content.locator("ul > li")).to_have_text(["first item", "second item"])
    # A code block keeps its markup as text.
    await expect(content.locator("pre code")).to_have_text('print("<b>not bold</b>")')
    await expect(content.locator("pre b")).to_have_count(0)
    await expect(content.locator("table td")).to_have_text(["1", "2"])
    link = content.get_by_role("link", name="a site")
    await expect(link).to_have_attribute("href", "https://example.com/docs")
    await expect(link).to_have_attribute("rel", "noopener noreferrer")
    await expect(link).to_have_attribute("target", "_blank")
    # A javascript: URL loses its href; an image is a link, never fetched.
    await expect(content.locator("a", has_text="a trap")).not_to_have_attribute("href", re.compile(".*"))
    await expect(content.get_by_role("link", name="a pixel")).to_have_attribute("href", "https://example.com/p.png")
    await expect(content.locator("img")).to_have_count(0)
    # Raw HTML from the model is shown as what it wrote.
    await expect(content).to_contain_text('<div onclick="window.__pwned = 4">raw html</div>')
    await expect(content.locator("div")).to_have_count(0)


async def test_usage_shows_tokens_by_day_model_agent_and_tenant(
    console: Console, offline_stack: Stack, key: str
) -> None:
    agent = await _agent(offline_stack, key)
    session = await create_session(offline_stack, agent.id)
    await offline_stack.sessions.SendMessage(
        pb.SendMessageRequest(session_id=session.id, messages=[user("count me")]), metadata=AUTH
    )
    budgeted = f"Budgeted {key}"
    await offline_stack.tenants.CreateTenant(
        pb.CreateTenantRequest(
            tenant=pb.Tenant(
                id=key, display_name=budgeted, budget=pb.Budget(period=pb.BUDGET_PERIOD_MONTH, max_tokens=1000)
            )
        ),
        metadata=AUTH,
    )
    await console.sign_in()
    await console.open("/usage")
    page = console.page
    await expect(page.locator(".totals")).to_contain_text("tokens")
    await expect(page.locator(".chart canvas")).to_have_count(1)
    await expect(page.locator(".bars").filter(has_text="By agent: tokens")).to_contain_text(key)
    await expect(page.locator(".bars").filter(has_text="By model: tokens")).to_contain_text("agentapi-offline")
    await expect(page.locator(".bars").filter(has_text="By tenant: tokens")).to_be_visible()
    budget = page.locator("section[aria-labelledby=budgets-title] tbody tr").filter(has_text=budgeted)
    await expect(budget).to_contain_text("0 / 1,000")
    await console.shot("usage")


async def test_a_client_key_sees_no_operator_pages(console: Console, offline_stack: Stack) -> None:
    created = await offline_stack.api_keys.CreateApiKey(
        pb.CreateApiKeyRequest(api_key=pb.ApiKey(display_name="console e2e", scope=pb.API_KEY_SCOPE_CLIENT)),
        metadata=AUTH,
    )
    await console.sign_in(created.secret)
    page = console.page
    nav = page.locator("nav[aria-label=Console]")
    await expect(nav.get_by_role("link", name="Agents", exact=True)).to_be_visible()
    for label in ("Tenants", "API keys", "MCP servers"):
        await expect(nav.get_by_role("link", name=label, exact=True)).to_have_count(0)
    await expect(page.locator(".who")).to_have_text("client")
    await expect(page.get_by_role("link", name="New agent")).to_have_count(0)
    await expect(page.get_by_role("button", name="Delete")).to_have_count(0)
    await console.open("/tenants")
    await expect(page.get_by_role("alert")).to_contain_text("may not use this page")
    await console.open("/agents")
    await console.shot("client-key-agents")


async def test_a_long_transcript_pages_and_a_narrow_dark_window_fits(
    console: Console, offline_stack: Stack, key: str
) -> None:
    agent = await _agent(offline_stack, key)
    session = await create_session(offline_stack, agent.id)
    inputs = [user(f"message {i}") for i in range(999)]  # with the reply: 1,000 messages
    await offline_stack.sessions.SendMessage(
        pb.SendMessageRequest(session_id=session.id, messages=inputs), metadata=AUTH
    )
    page: Any = console.page
    await page.emulate_media(color_scheme="dark")
    await page.set_viewport_size({"width": 390, "height": 800})
    await console.sign_in()
    await console.open(f"/sessions/{session.id}")
    await expect(page.locator("article.message")).to_have_count(100)
    await page.get_by_role("button", name="Load more").click()
    await expect(page.locator("article.message")).to_have_count(200)
    # Nothing sticks out sideways on a phone-sized window.
    assert await page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
    background = await page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert background == "rgb(20, 23, 28)", background  # the dark palette
    await page.evaluate("window.scrollTo(0, 0)")
    await page.wait_for_timeout(200)  # content-visibility paints the cards now on screen
    await console.shot("transcript-narrow-dark", full_page=False)


async def test_a_failed_turn_shows_its_reason(console: Console, offline_stack: Stack, key: str) -> None:
    # One step allowed, and the model calls a tool in it: the run ends FAILED (MAX_STEPS_EXCEEDED).
    agent = await create_agent(offline_stack, key, model="agentapi-offline", builtin_tools=["calculator"], max_steps=1)
    await console.sign_in()
    await console.open(f"/playground?agent={agent.id}")
    await _send(console, 'use calculator {"expression": "1+1"}')
    page = console.page
    await expect(page.get_by_role("alert")).to_contain_text("MAX_STEPS_EXCEEDED")
    await page.get_by_role("link", name="Open transcript").click()
    failed = page.locator('article.message[data-status="FAILED"]')
    await expect(failed.locator(".error")).to_contain_text("MAX_STEPS_EXCEEDED")
    await expect(failed.locator(".badge").first).to_have_text("failed")
    await page.select_option("#status-filter", "failed")
    await expect(page.locator("article.message")).to_have_count(1)
    await console.shot("transcript-failed")


async def test_an_operator_creates_a_tenant_and_a_key_for_it(console: Console, key: str) -> None:
    await console.sign_in()
    page = console.page
    await console.open("/tenants")
    await page.fill("#t-id", key)
    await page.fill("#t-name", f"Tenant {key}")
    await page.fill("#t-tokens", "5000")
    await page.get_by_role("button", name="Create tenant").click()
    await expect(page.locator("tbody tr").filter(has_text=key)).to_contain_text("5,000 tokens per month")
    await console.open("/keys")
    await page.fill("#nk-name", "console client")
    await page.fill("#nk-tenant", key)
    await page.get_by_role("button", name="Create key").click()
    secret = await page.locator("code.secret").inner_text()
    assert secret.startswith("sk-")
    # The secret is shown once; the list holds only its prefix.
    await page.fill("#k-tenant", key)
    await page.locator("#k-tenant").press("Enter")
    row = page.locator("tbody tr").filter(has_text="console client")
    await expect(row).to_contain_text("client")
    assert secret not in await page.locator("table").inner_text()
    await console.shot("api-keys")
