"""The built-in offline model: deterministic replies with no keys and no servers.

Model id ``agentapi-offline``. Rules, applied to the last prompt message:

* a ``tool`` message -> ``Tool <name> returned: <content>``;
* a user message naming one of the offered tools (``call get_weather {"city":
  "Paris"}``) -> a tool call to that tool, with the first JSON object in the
  message as its arguments (``{}`` when there is none);
* anything else -> ``You said: <text>``, streamed word by word.

Asked to reason (``reasoning_effort`` low, medium or high) it streams
``Thinking about: <text>`` as reasoning first; it answers agentapi's routing
prompts (the auto classifier, the reasoning plan) deterministically.

It honours the request fields it can: ``response_format`` (``json_object``:
``{"reply": <text>}``; ``json_schema``: a value valid against the schema,
see :mod:`server.llm.json_instance`), ``tool_choice`` (``none``, ``required``
or one function), ``parallel_tool_calls: false`` (the first call only),
``stop``, ``max_tokens``/``max_completion_tokens`` (finish ``length``) and
``logprobs`` (each word has probability 1, so log probability 0). It refuses
what it cannot: ``logit_bias`` and output modalities other than text.

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

from server.domain.errors import AgentAPIError, FieldViolation
from server.domain.history import count_text
from server.llm.json_instance import instance
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


def _called_tools(request: ChatRequest, text: str) -> list[str]:
    """The tools the reply calls: those the text names, as ``tool_choice`` allows."""
    choice = request.params.get("tool_choice", "auto")
    names = [t.get("function", {}).get("name", "") for t in request.tools]
    if choice == "none" or not names:
        return []
    if isinstance(choice, dict):
        return [(choice.get("function") or {}).get("name", "")]
    called = [name for name in names if name and re.search(rf"\b{re.escape(name)}\b", text)]
    if not called and choice == "required":
        called = names[:1]
    if request.params.get("parallel_tool_calls") is False:
        called = called[:1]
    return called


def _formatted(request: ChatRequest, text: str) -> str:
    """The reply text in the requested ``response_format``."""
    response_format = request.params.get("response_format") or {}
    kind = response_format.get("type")
    if kind == "json_object":
        return json.dumps({"reply": text})
    if kind == "json_schema":
        schema = (response_format.get("json_schema") or {}).get("schema") or {}
        return json.dumps(instance(schema, text))
    return text


def _last_user_text(messages: list[dict[str, Any]]) -> str:
    return next((_text(m) for m in reversed(messages) if m.get("role") == "user"), "")


def _routing_answer(request: ChatRequest) -> str | None:
    """The answer to agentapi's routing prompts (server/domain/runs/routing.py),
    recognised by their tags: a classification (reasoning for a question of
    12 words or more, or one that asks how or why) or a short plan."""
    prompt = " ".join(_text(m) for m in request.messages if m.get("role") == "system")
    text = _last_user_text(request.messages)
    if "[agentapi:classify]" in prompt:
        words = text.lower().split()
        return "reasoning" if len(words) >= 12 or {"how", "why"} & set(words) else "passthrough"
    if "[agentapi:plan]" in prompt and request.messages[-1].get("role") == "system":
        return f"1. Understand the request: {text}\n2. Answer it in one sentence."
    return None


def plan_reply(request: ChatRequest) -> tuple[str, list[tuple[str, str, str]]]:
    """Decides the reply: (text, [(call_id, function_name, arguments_json)])."""
    if (answer := _routing_answer(request)) is not None:
        return answer, []
    last = request.messages[-1] if request.messages else {"role": "user", "content": ""}
    text = _text(last)
    if last.get("role") == "tool":
        name = _tool_name_for(str(last.get("tool_call_id", "")), request.messages) or "tool"
        return _formatted(request, f"Tool {name} returned: {text}"), []
    called = _called_tools(request, text)
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
    return _formatted(request, f"You said: {text}"), []


def _logprobs(word: str, top: int) -> tuple[dict[str, Any], ...]:
    """One ``logprobs.content`` entry: the word is certain (log probability 0)."""
    entry = {"token": word, "logprob": 0.0, "bytes": list(word.encode())}
    return ({**entry, "top_logprobs": [dict(entry)] if top else []},)


class _OfflineStream:
    request_id = ""
    cost_usd = 0.0  # the offline model is free

    def __init__(self, request: ChatRequest) -> None:
        self._request = request

    def _words(self, text: str) -> tuple[list[str], str]:
        """The words streamed and the finish reason, after ``stop`` and the token limit."""
        params = self._request.params
        for stop in params.get("stop") or ():
            if stop and stop in text:
                text = text[: text.index(stop)]
        words = re.findall(r"\S+\s*", text)
        limit = params.get("max_completion_tokens") or self._request.max_tokens
        if limit is not None:
            kept, used = [], 0
            for word in words:
                used += estimate_tokens(word)
                if used > limit:
                    return kept, "length"
                kept.append(word)
        return words, "stop"

    async def __aiter__(self) -> AsyncIterator[ChatChunk]:
        text, calls = plan_reply(self._request)
        effort = self._request.params.get("reasoning_effort")
        thought = ""
        if effort and effort not in ("none", "minimal"):  # it thinks aloud when asked to reason
            thought = f"Thinking about: {_last_user_text(self._request.messages)}"
            for word in re.findall(r"\S+\s*", thought):
                await asyncio.sleep(0)
                yield ChatChunk(reasoning=word, model=OFFLINE_MODEL)
        words, finish_reason = self._words(text)
        logprobs = bool(self._request.params.get("logprobs"))
        top = int(self._request.params.get("top_logprobs") or 0)
        for word in words:
            await asyncio.sleep(0)  # yield to the loop, as a network stream would
            yield ChatChunk(content=word, model=OFFLINE_MODEL, logprobs=_logprobs(word, top) if logprobs else ())
        for index, (call_id, name, arguments) in enumerate(calls):
            half = len(arguments) // 2
            yield ChatChunk(tool_calls=(ToolCallFragment(index, call_id, name, arguments[:half]),))
            yield ChatChunk(tool_calls=(ToolCallFragment(index, arguments=arguments[half:]),))
        prompt = sum(estimate_tokens(_text(m)) for m in self._request.messages)
        reasoning = estimate_tokens(thought) if thought else 0
        completion = estimate_tokens("".join(words)) + sum(estimate_tokens(c[1] + c[2]) for c in calls) + reasoning
        yield ChatChunk(
            finish_reason="tool_calls" if calls else finish_reason,
            usage=TokenUsage(prompt, completion, reasoning_tokens=reasoning),
            model=OFFLINE_MODEL,
        )


class OfflineBackend:
    """Chat backend that serves only :data:`OFFLINE_MODEL`, in process."""

    provider_name = "agentapi.offline"  # gen_ai.provider.name of its spans

    def check(self, model: str, params: dict[str, Any]) -> None:
        """Raises INVALID_ARGUMENT (UNSUPPORTED_PARAMETER) for ``logit_bias``
        and non-text ``modalities``: the offline model samples nothing and
        only writes text."""
        if model != OFFLINE_MODEL:
            return  # stream() answers MODEL_NOT_FOUND, with fallbacks
        refused = []
        if params.get("logit_bias"):
            refused.append(FieldViolation("options.logit_bias", "the offline model samples nothing to bias"))
        if any(m != "text" for m in params.get("modalities") or ()):
            refused.append(FieldViolation("options.modalities", "the offline model writes text only"))
        if refused:
            names = ", ".join(v.field.removeprefix("options.") for v in refused)
            raise AgentAPIError(
                "INVALID_ARGUMENT",
                "UNSUPPORTED_PARAMETER",
                f"model {OFFLINE_MODEL!r} cannot honour {names}",
                {"model": model},
                field_violations=tuple(refused),
            )

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
