"""ExportSession and ReplaySession, end to end through the real LiteLLM proxy."""

from __future__ import annotations

import json
from typing import Any

from google.protobuf import field_mask_pb2

from agentapi import v1 as pb
from tests.helpers import all_messages, create_agent, create_session, stream_turn, user
from tests.stack import AUTH, Stack


async def _export(stack: Stack, session_id: str, export_format: int) -> pb.ExportSessionResponse:
    return await stack.sessions.ExportSession(
        pb.ExportSessionRequest(session_id=session_id, format=export_format), metadata=AUTH
    )


async def test_export_round_trip_reproduces_the_prompt(stack: Stack, upstream: Any, key: str) -> None:
    agent = await create_agent(stack, key, system_prompt="You answer briefly.")
    session = await create_session(stack, agent.id)
    await stream_turn(stack, session.id, user("first question"))
    await stream_turn(stack, session.id, user("second question"))
    original = [r["body"] for r in upstream.requests if r["path"].endswith("/chat/completions")][-1]["messages"]

    exported = await _export(stack, session.id, pb.EXPORT_FORMAT_OPENAI_JSON)
    assert exported.content_type == "application/json"
    body = json.loads(exported.content)
    assert body["agent_revision"]["revision"] == 1
    assert body["agent_revision"]["settings"]["system_prompt"] == "You answer briefly."
    assert [entry["model"] for entry in body["ledger"] if entry["role"] == "assistant"] == ["scripted-a"] * 2
    assert all(entry["usage"]["total_tokens"] > 0 for entry in body["ledger"] if entry["role"] == "assistant")
    assert body["messages"][-1] == {"role": "assistant", "content": "Echo: second question"}

    # Fed back as `messages`, the export up to the last reply is exactly the prompt that produced it.
    replay = await stack.openai().chat.completions.create(model="scripted-a", messages=body["messages"][:-1])
    assert replay.choices[0].message.content == "Echo: second question"
    again = [r["body"] for r in upstream.requests if r["path"].endswith("/chat/completions")][-1]["messages"]
    assert again == original


async def test_jsonl_has_a_line_per_turn_and_markdown_reads(stack: Stack, key: str) -> None:
    agent = await create_agent(stack, key, system_prompt="Be kind.")
    session = await create_session(stack, agent.id)
    await stream_turn(stack, session.id, user("one"))
    await stream_turn(stack, session.id, user("two"))
    jsonl = await _export(stack, session.id, pb.EXPORT_FORMAT_JSONL)
    lines = [json.loads(line) for line in jsonl.content.splitlines()]
    assert [line["turn"] for line in lines] == [1, 2]
    assert [m["content"] for m in lines[0]["messages"]] == ["Be kind.", "one", "Echo: one"]
    assert len(lines[1]["messages"]) == 5 and lines[1]["model"] == "scripted-a"
    assert (
        lines[1]["usage"]["total_tokens"]
        == lines[1]["usage"]["prompt_tokens"] + (lines[1]["usage"]["completion_tokens"])
    )
    markdown = (await _export(stack, session.id, pb.EXPORT_FORMAT_MARKDOWN)).content
    assert markdown.startswith(f"# Session {session.id}")
    assert f"`{key}` (revision 1)" in markdown and "Echo: two" in markdown and "`scripted-a`" in markdown


async def test_replay_reruns_user_turns_on_another_model_with_the_pinned_revision(stack: Stack, key: str) -> None:
    agent = await create_agent(stack, key, system_prompt="v1 prompt")
    session = await create_session(stack, agent.id)
    await stream_turn(stack, session.id, user("alpha"))
    await stream_turn(stack, session.id, user("beta"))
    # A later revision must not leak into the replay of a session pinned to revision 1.
    await stack.agents.UpdateAgent(
        pb.UpdateAgentRequest(
            agent=pb.Agent(id=agent.id, system_prompt="v2 prompt"),
            update_mask=field_mask_pb2.FieldMask(paths=["system_prompt"]),
        ),
        metadata=AUTH,
    )
    replayed = await stack.sessions.ReplaySession(
        pb.ReplaySessionRequest(session_id=session.id, model="scripted-b"), metadata=AUTH
    )
    assert replayed.session.id != session.id and replayed.session.conversation_id == session.conversation_id
    assert replayed.session.agent_revision == 1
    assert replayed.session.effective_settings.system_prompt == "v1 prompt"
    assert [(m.role, m.content, m.model) for m in replayed.messages] == [
        (pb.ROLE_USER, "alpha", ""),
        (pb.ROLE_ASSISTANT, "Echo: alpha", "scripted-b"),
        (pb.ROLE_USER, "beta", ""),
        (pb.ROLE_ASSISTANT, "Echo: beta", "scripted-b"),
    ]
    assert [m.model for m in await all_messages(stack, session.id) if m.role == pb.ROLE_ASSISTANT] == [
        "scripted-a",
        "scripted-a",
    ]
