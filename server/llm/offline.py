"""The built-in offline model: deterministic replies with no keys and no servers.

Model id ``agentapi-offline``. Rules, applied to the last prompt message:

* a ``tool`` message -> ``Tool <name> returned: <content>``;
* a user message naming one of the offered tools (``call get_weather {"city":
  "Paris"}``) -> a tool call to that tool, with the first JSON object in the
  message as its arguments (``{}`` when there is none);
* anything else -> ``You said: <text>``, streamed word by word.

Usage is estimated at one token per 4 characters, rounded up.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from server.domain.errors import AgentAPIError
from server.domain.history import count_text
from server.llm.types import ChatChunk, ChatRequest, ModelInfo, TokenUsage, ToolCallFragment

OFFLINE_MODEL = "agentapi-offline"
_JSON_OBJECT = re.compile(r"\{.*\}", re.DOTALL)


def estimate_tokens(text: str) -> int:
    """One token per 4 characters, rounded up: the documented estimate for
    models outside the OpenAI family (server/domain/history.py)."""
    return count_text(text, OFFLINE_MODEL)


def _text(message: dict[str, Any]) -> str:
    content = message.get("content") or ""
    if isinstance(content, list):  # content parts
        return " ".join(part.get("text", "") for part in content if isinstance(part, dict))
    return str(content)


def _tool_name_for(call_id: str, messages: list[dict[str, Any]]) -> str:
    for message in messages:
        for call in message.get("tool_calls") or ():
            if call.get("id") == call_id:
                return str(call.get("function", {}).get("name", ""))
    return ""


def plan_reply(request: ChatRequest) -> tuple[str, list[tuple[str, str, str]]]:
    """Decides the reply: (text, [(call_id, function_name, arguments_json)])."""
    last = request.messages[-1] if request.messages else {"role": "user", "content": ""}
    text = _text(last)
    if last.get("role") == "tool":
        name = _tool_name_for(str(last.get("tool_call_id", "")), request.messages) or "tool"
        return f"Tool {name} returned: {text}", []
    tool_names = [t.get("function", {}).get("name", "") for t in request.tools]
    called = [name for name in tool_names if name and re.search(rf"\b{re.escape(name)}\b", text)]
    if called:
        match = _JSON_OBJECT.search(text)
        arguments = "{}"
        if match:
            try:
                arguments = json.dumps(json.loads(match.group(0)), separators=(",", ":"))
            except ValueError:
                arguments = "{}"
        calls = []
        for index, name in enumerate(called):
            digest = hashlib.sha256(f"{len(request.messages)}:{index}:{text}".encode()).hexdigest()[:24]
            calls.append((f"call_{digest}", name, arguments))
        return "", calls
    return f"You said: {text}", []


class _OfflineStream:
    request_id = ""
    cost_usd = 0.0  # the offline model is free

    def __init__(self, request: ChatRequest) -> None:
        self._request = request

    async def __aiter__(self) -> AsyncIterator[ChatChunk]:
        text, calls = plan_reply(self._request)
        words = re.findall(r"\S+\s*", text)
        for word in words:
            await asyncio.sleep(0)  # yield to the loop, as a network stream would
            yield ChatChunk(content=word, model=OFFLINE_MODEL)
        for index, (call_id, name, arguments) in enumerate(calls):
            half = len(arguments) // 2
            yield ChatChunk(tool_calls=(ToolCallFragment(index, call_id, name, arguments[:half]),))
            yield ChatChunk(tool_calls=(ToolCallFragment(index, arguments=arguments[half:]),))
        prompt = sum(estimate_tokens(_text(m)) for m in self._request.messages)
        completion = estimate_tokens(text) + sum(estimate_tokens(c[1] + c[2]) for c in calls)
        yield ChatChunk(
            finish_reason="tool_calls" if calls else "stop",
            usage=TokenUsage(prompt, completion),
            model=OFFLINE_MODEL,
        )


class OfflineBackend:
    """Chat backend that serves only :data:`OFFLINE_MODEL`, in process."""

    @asynccontextmanager
    async def stream(self, request: ChatRequest) -> AsyncIterator[_OfflineStream]:
        """Streams the deterministic reply; raises NOT_FOUND (MODEL_NOT_FOUND)
        for any other model."""
        if request.model != OFFLINE_MODEL:
            raise AgentAPIError(
                "NOT_FOUND",
                "MODEL_NOT_FOUND",
                f"model {request.model!r} is not served: no upstream is configured "
                f"(set AGENTAPI_LLM_BASE_URL), and the offline model is {OFFLINE_MODEL!r}",
                {"model": request.model},
            )
        yield _OfflineStream(request)

    async def list_models(self) -> list[ModelInfo]:
        """The offline model alone."""
        return [ModelInfo(id=OFFLINE_MODEL, owned_by="agentapi", context_window=32768)]

    async def aclose(self) -> None:
        """Nothing to release."""
