"""Small helpers shared by the end-to-end tests."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Callable
from typing import Any

import grpc

from agentapi import errors
from agentapi import v1 as pb
from tests.stack import AUTH, Stack


def user(text: str) -> pb.InputMessage:
    """A user input message."""
    return pb.InputMessage(role=pb.ROLE_USER, content=text)


def error_reason(error: grpc.aio.AioRpcError) -> str:
    """The ErrorInfo reason of a failed call, decoded by the client package."""
    reason = errors.from_rpc_error(error).reason
    assert reason, "the error carries no agentapi ErrorInfo"
    return reason


def field_violations(error: grpc.aio.AioRpcError) -> list[str]:
    """The fields named by the BadRequest detail."""
    return [path for path, _ in errors.from_rpc_error(error).field_violations]


async def create_agent(stack: Stack, key: str, model: str = "scripted-a", **fields: Any) -> pb.Agent:
    """Creates an agent with the master key."""
    response = await stack.agents.CreateAgent(
        pb.CreateAgentRequest(agent=pb.Agent(key=key, default_model=model, **fields)), metadata=AUTH
    )
    return response.agent


async def create_session(stack: Stack, agent_id: str = "", model: str = "") -> pb.Session:
    """Creates a session for an agent, or for a plain model."""
    session = pb.Session(agent_id=agent_id, overrides=pb.SessionSettings(model=model))
    response = await stack.sessions.CreateSession(pb.CreateSessionRequest(session=session), metadata=AUTH)
    return response.session


async def stream_turn(
    stack: Stack, session_id: str, *messages: pb.InputMessage
) -> list[pb.SendStreamingMessageResponse]:
    """Runs one streamed turn and returns every event."""
    call = stack.sessions.SendStreamingMessage(
        pb.SendStreamingMessageRequest(session_id=session_id, messages=list(messages)), metadata=AUTH
    )
    return [event async for event in call]


async def all_messages(stack: Stack, session_id: str) -> list[pb.Message]:
    """Every stored message of a session, following page tokens."""
    messages: list[pb.Message] = []
    token = ""
    while True:
        page = await stack.sessions.ListMessages(
            pb.ListMessagesRequest(session_id=session_id, page_size=2, page_token=token), metadata=AUTH
        )
        messages += page.messages
        token = page.next_page_token
        if not token:
            return messages


def sent_upstream(upstream: Any, last_content: str) -> dict[str, Any]:
    """The newest chat-completions body the upstream received whose last message is ``last_content``."""
    bodies = [
        r["body"]
        for r in upstream.requests
        if r["path"].endswith("/chat/completions") and r["body"]["messages"][-1].get("content") == last_content
    ]
    assert bodies, f"the upstream never received {last_content!r}"
    return bodies[-1]


async def process_exit(process: subprocess.Popen[Any], timeout_s: float, log: Callable[[], str]) -> int:
    """The exit code of a server subprocess, polled without blocking the loop;
    fails the test with ``log()`` when it is still running after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while (code := process.poll()) is None:
        assert time.monotonic() < deadline, f"agentapi did not exit:\n{log()}"
        await asyncio.sleep(0.05)
    return code
