"""The ``agentapi`` command line against the real in-process server: typer's
CliRunner for the commands (in a worker thread: the server shares the test's
event loop), ``agentapi chat`` once through a pseudo-terminal (pexpect), and the
one ``agentapi`` script that also runs the server's commands."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pexpect
from typer.testing import CliRunner

from agentapi import v1 as pb
from agentapi.cli import main, plugins
from agentapi.cli.app import build_app
from tests.stack import MASTER_KEY, Stack
from tests.test_client import OFFLINE, client, target

AGENTAPI = Path(sys.executable).parent / "agentapi"


def run(stack: Stack, *args: str, input: str | None = None, api_key: str = MASTER_KEY) -> Any:
    env = {"AGENTAPI_URL": target(stack), "AGENTAPI_API_KEY": api_key}
    return CliRunner().invoke(build_app(plugins()), list(args), env=env, input=input, catch_exceptions=False)


async def cli(stack: Stack, *args: str, input: str | None = None, api_key: str = MASTER_KEY) -> Any:
    return await asyncio.to_thread(run, stack, *args, input=input, api_key=api_key)


async def test_agents_from_a_yaml_file(offline_stack: Stack, key: str, tmp_path: Path) -> None:
    spec = tmp_path / "agent.yaml"
    spec.write_text(f"key: {key}\ndefault_model: {OFFLINE}\nsystemPrompt: Be brief.\nbuiltin_tools: [calculator]\n")
    created = await cli(offline_stack, "agents", "create", "-f", str(spec), "--json")
    assert created.exit_code == 0, created.output
    assert json.loads(created.stdout)["system_prompt"] == "Be brief."
    assert key in (await cli(offline_stack, "agents", "list")).stdout
    listed = json.loads((await cli(offline_stack, "agents", "list", "--json", "--filter", f'key = "{key}"')).stdout)
    assert [a["key"] for a in listed] == [key]
    assert "Be brief." in (await cli(offline_stack, "agents", "get", key)).stdout
    change = tmp_path / "change.json"
    change.write_text(json.dumps({"key": key, "system_prompt": "Be briefer."}))
    updated = await cli(offline_stack, "agents", "update", key, "-f", str(change), "--json")
    assert json.loads(updated.stdout)["revision"] == "2" and json.loads(updated.stdout)["builtin_tools"]
    revisions = json.loads((await cli(offline_stack, "agents", "revisions", key, "--json")).stdout)
    assert sorted(int(r["revision"]) for r in revisions) == [1, 2]
    assert (await cli(offline_stack, "agents", "delete", key)).exit_code == 0
    # exit codes by error class: already exists (5), not found (4)
    again = await cli(offline_stack, "agents", "create", "-f", str(spec))
    assert again.exit_code == 5 and "AGENT_ALREADY_EXISTS" in again.stderr
    assert (await cli(offline_stack, "agents", "get", f"{key}-missing")).exit_code == 4


async def test_an_invalid_agent_file_is_refused_before_any_call(offline_stack: Stack, tmp_path: Path) -> None:
    for text, needle in (
        ("key: a\nno_such_field: 1\n", "no_such_field"),
        ("key: a\ntemperature: warm\n", "temperature"),
        ("- a list\n", "mapping"),
        ("key: [unclosed\n", "not YAML"),
    ):
        spec = tmp_path / "bad.yaml"
        spec.write_text(text)
        result = await cli(offline_stack, "agents", "create", "-f", str(spec))
        flat = " ".join(result.output.replace("│", " ").split())  # click's error box wraps lines
        assert result.exit_code == 2 and needle in flat, (text, result.output)
    server_side = tmp_path / "empty.yaml"
    server_side.write_text("display_name: nameless\n")
    result = await cli(offline_stack, "agents", "create", "-f", str(server_side))
    assert result.exit_code == 5 and "agent.key" in result.stderr


async def test_sessions_list_show_export_and_chat_once(offline_stack: Stack, key: str, tmp_path: Path) -> None:
    async with client(offline_stack) as api:
        await api.agents.create(key=key, default_model=OFFLINE)
    once = await cli(offline_stack, "chat", "--agent", key, "--once", "hello from the cli")
    assert once.exit_code == 0, once.output
    session_id = once.stderr.split("session ", 1)[1].split()[0]
    assert once.stdout.strip()
    continued = await cli(
        offline_stack, "chat", "--session", session_id, "--once", "and again", "--reasoning-effort", "low"
    )
    assert continued.exit_code == 0 and "Thinking about" in continued.stdout
    shown = json.loads((await cli(offline_stack, "sessions", "show", session_id, "--json")).stdout)
    assert [m["content"] for m in shown["messages"] if m["role"] == "ROLE_USER"] == ["hello from the cli", "and again"]
    assert "hello from the cli" in (await cli(offline_stack, "sessions", "show", session_id)).stdout
    listed = json.loads((await cli(offline_stack, "sessions", "list", "--json", "--limit", "500")).stdout)
    assert session_id in [s["id"] for s in listed]
    for fmt, needle in (("md", "hello from the cli"), ("jsonl", '"role"'), ("openai", '"role"')):
        exported = await cli(offline_stack, "sessions", "export", session_id, "--format", fmt)
        assert exported.exit_code == 0 and needle in exported.stdout, fmt
    target_file = tmp_path / "t.md"
    written = await cli(offline_stack, "sessions", "export", session_id, "-o", str(target_file))
    assert written.exit_code == 0 and "and again" in target_file.read_text()
    assert (await cli(offline_stack, "sessions", "export", session_id, "--format", "pdf")).exit_code == 2
    assert (await cli(offline_stack, "sessions", "show", str(uuid.uuid4()))).exit_code == 4
    assert (await cli(offline_stack, "chat", "--agent", key, "--model", OFFLINE, "--once", "x")).exit_code == 2


async def test_chat_once_answers_a_client_tool_at_the_prompt(offline_stack: Stack, key: str) -> None:
    async with client(offline_stack) as api:
        tool = pb.Tool(type="function", function=pb.FunctionDefinition(name="add"))
        await api.agents.create(key=key, default_model=OFFLINE, tools=[tool])
    result = await cli(offline_stack, "chat", "--agent", key, "--once", 'call add {"a": 2, "b": 2}', input="4\n")
    assert result.exit_code == 0, result.output
    assert "output of add" in result.stdout and "Tool add returned: 4" in result.stdout


async def test_keys_usage_models(offline_stack: Stack) -> None:
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    async with client(offline_stack) as api:
        await api.tenants.create(id=tenant)
    made = await cli(offline_stack, "keys", "create", "--tenant", tenant, "--scope", "admin", "--name", "ci")
    assert made.exit_code == 0, made.output
    secret = made.stdout.strip().splitlines()[-1]
    listed = json.loads((await cli(offline_stack, "keys", "list", "--tenant", tenant, "--json")).stdout)
    [key] = listed
    assert key["display_name"] == "ci" and "secret" not in key
    once = await cli(offline_stack, "chat", "--model", OFFLINE, "--once", "spend a little", api_key=secret)
    assert once.exit_code == 0, once.output
    for by in ("model", "agent", "day"):
        report = await cli(offline_stack, "usage", "--by", by, "--period", "month", api_key=secret)
        assert report.exit_code == 0 and "total" in report.stdout, report.output
    usage = json.loads((await cli(offline_stack, "usage", "--by", "model", "--json", api_key=secret)).stdout)
    assert [row["model"] for row in usage["rows"]] == [OFFLINE]
    assert (await cli(offline_stack, "usage", "--by", "colour")).exit_code == 2
    assert OFFLINE in (await cli(offline_stack, "models")).stdout
    assert OFFLINE in [m["id"] for m in json.loads((await cli(offline_stack, "models", "--json")).stdout)]
    assert (await cli(offline_stack, "keys", "revoke", key["id"])).exit_code == 0
    assert (await cli(offline_stack, "models", api_key=secret)).exit_code == 3  # revoked: unauthenticated


def test_an_unreachable_server_exits_7_with_one_line() -> None:
    env = {**os.environ, "AGENTAPI_URL": "127.0.0.1:1", "AGENTAPI_API_KEY": "sk-x"}
    result = subprocess.run([str(AGENTAPI), "models"], capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 7 and result.stderr.startswith("agentapi: UNAVAILABLE"), result.stderr
    assert "Traceback" not in result.stderr and "\x1b[" not in result.stderr  # no colour off a terminal


def test_one_agentapi_command_has_the_server_commands() -> None:
    assert {"serve", "migrate", "purge"} <= set(plugins())
    help_text = subprocess.run([str(AGENTAPI), "--help"], capture_output=True, text=True, timeout=60).stdout
    for name in ("chat", "agents", "sessions", "usage", "keys", "models", "serve", "migrate", "purge"):
        assert name in help_text, name
    serve_help = subprocess.run([str(AGENTAPI), "serve", "--help"], capture_output=True, text=True, timeout=60)
    assert serve_help.returncode == 0 and "--migrate" in serve_help.stdout and "--workers" in serve_help.stdout
    bad = subprocess.run([str(AGENTAPI), "serve", "--only", "nope"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "invalid choice" in bad.stderr  # argparse's own error and code
    assert main(["--version"]) == 0


async def test_chat_through_a_pseudo_terminal(offline_stack: Stack, key: str) -> None:
    async with client(offline_stack) as api:
        await api.agents.create(key=key, default_model=OFFLINE)

    def converse() -> str:
        env = {**os.environ, "AGENTAPI_URL": target(offline_stack), "AGENTAPI_API_KEY": MASTER_KEY, "TERM": "xterm"}
        for name in ("NO_COLOR", "COLUMNS"):
            env.pop(name, None)
        child = pexpect.spawn(str(AGENTAPI), ["chat", "--agent", key], env=env, encoding="utf-8", timeout=30)
        try:
            child.expect("you")
            transcript = child.before
            child.sendline("hello over a pty")
            child.expect("you")  # the reply streamed, then the next prompt
            transcript += child.before
            child.sendline("/exit")
            child.expect(pexpect.EOF)
        finally:
            child.close()
        assert child.exitstatus == 0, child.before
        return str(transcript)

    transcript = await asyncio.to_thread(converse)
    assert "\x1b[" in transcript  # colour on a terminal
    session_id = transcript.split("session ", 1)[1].split()[0].replace("\x1b[0m", "")
    async with client(offline_stack) as api:
        messages = [m async for m in api.messages.list(session_id)]
    assert [m.content for m in messages][0] == "hello over a pty"
    assert messages[1].status == pb.MESSAGE_STATUS_COMPLETED and messages[1].content in transcript.replace("\r", "")
