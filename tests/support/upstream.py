"""A scripted, OpenAI-compatible chat completions server for tests.

``ScriptedUpstream`` runs the Starlette app from ``create_app()`` with uvicorn
in a background thread on a free 127.0.0.1 port. Point an OpenAI client, or a
LiteLLM proxy, at ``upstream.base_url`` (``http://127.0.0.1:PORT/v1``).

Endpoints
---------
``GET  /v1/models``            OpenAI list of ``MODEL_IDS`` (scripted-a/b/c).
``POST /v1/chat/completions``  ``chat.completion`` or, with ``"stream": true``,
                               SSE ``chat.completion.chunk`` events ending in
                               ``data: [DONE]``. Any model name is accepted
                               and echoed back in ``model``.
``GET  /_requests``            JSON list of the recorded requests (below).
``POST /_reset``               Clears the recorded requests and ``disconnects``.

Directives
----------
Behaviour is scripted by directives in the text of the LAST message whose role
is ``user`` (string content or text parts), so concurrent tests need no shared
state. Directives are removed from the text before it is echoed.

``(none)``                 Reply ``Echo: <last user text>``, streamed one word
                           per delta, ``finish_reason`` ``stop``.
``[[tool:NAME {json}]]``   Reply with a call to function NAME with those
                           arguments (``{}`` if omitted), ``finish_reason``
                           ``tool_calls``. Several directives give parallel
                           calls with indices 0, 1, ... Streamed like OpenAI:
                           a header delta (``id`` ``call_...``, ``type``,
                           ``function.name``, ``arguments: ""``) then the
                           arguments JSON in >= 2 fragments.
``[[error:STATUS]]``       HTTP STATUS with an OpenAI error body
                           ``{"error": {"message", "type", "param", "code"}}``;
                           429 adds ``Retry-After: 1``. ``[[error:context]]``
                           is a 400 with code ``context_length_exceeded`` and
                           OpenAI's "maximum context length" message.
                           A malformed directive gives a 400 "bad directive".
``[[error:STATUS@MODEL]]`` The same, only for requests naming MODEL (so a
                           fallback model answers).
``[[error:quota]]``        OpenAI's provider quota error: 429 with type and
                           code ``insufficient_quota`` and no Retry-After.
``[[error:content_filter]]`` OpenAI's content policy error: 400 with code
                           ``content_policy_violation``.
``[[retry_after:S]]``      The Retry-After value (seconds, or an HTTP date)
                           sent with ``[[error:429]]`` (default ``1``).
``[[slow:MS]]``            Sleep MS milliseconds before each delta
                           (non-streaming: MS x deltas before replying).
``[[drop_after:N]]``       Send the first (role) chunk and N more chunks, then
                           close the connection abruptly (no finish chunk, no
                           [DONE]).
                           Non-streaming: half the body, then close.
``[[reset_after:N]]``      Like drop_after, but the connection is reset (TCP
                           RST, as a crashed peer or a middlebox does).
``[[stall:MS]]``           Say nothing for MS milliseconds before the response
                           starts (no status line, no headers).
``[[stall:MS@N]]``         Stream the role chunk and N more chunks, then say
                           nothing for MS milliseconds, then go on.
``[[stall:MS/MODEL]]``     Either stall (``MS`` or ``MS@N``), only for
                           requests naming MODEL (so a fallback model answers).
``[[malformed:N]]``        Stream the role chunk and N more chunks, then an
                           event whose data is not JSON, then the rest.
``[[reasoning:TEXT]]``     Stream TEXT as ``reasoning_content`` deltas (word by
                           word) before the reply, count its words as
                           ``completion_tokens_details.reasoning_tokens``;
                           non-streaming: ``message.reasoning_content``.
``[[thinking:TEXT]]``      Stream TEXT as LiteLLM's ``thinking_blocks`` pieces
                           (``{"type": "thinking", "thinking": word}``), then
                           one piece carrying a ``signature``.
``[[finish:REASON]]``      End with this ``finish_reason`` (e.g.
                           ``content_filter``, ``length``).
``[[empty]]``              A stream (or completion) with no content at all:
                           the role chunk, then ``finish_reason`` ``stop``.

``[[refusal]]``            Refuse: ``content`` null and ``refusal``
                           ``REFUSAL_TEXT`` (streamed as ``delta.refusal``
                           words), ``finish_reason`` ``stop``.

Request parameters
------------------
``response_format``        ``{"type": "json_object"}``: the reply text is the
                           JSON object ``{"echo": "<last user text>"}``.
                           ``{"type": "json_schema", "json_schema": {"schema":
                           S}}``: the reply text is a minimal JSON instance
                           valid against S (``minimal_instance``: objects with
                           their required properties, the first ``enum`` or
                           ``const`` value, strings (the echo text; dates,
                           times and UUIDs in their formats), numbers and
                           integers at their minimum or 0, ``false``,
                           ``null``, arrays of ``minItems`` items, the first
                           branch of ``anyOf``/``oneOf``, ``allOf`` merged,
                           ``$ref`` into ``$defs``). Streamed word by word
                           like any text. Tool directives win over both.
``logprobs: true``         Every content delta (and, non-streamed,
                           ``choices[0].logprobs``) carries OpenAI's
                           ``logprobs: {"content": [{"token", "logprob",
                           "bytes", "top_logprobs"}], "refusal": null}``, one
                           entry per word: token = the word, logprob =
                           ``-0.01 * (position + 1)``, ``top_logprobs`` of
                           ``top_logprobs`` entries (default 0) whose tokens are
                           ``alt<k>``.

If the last message has role ``tool``, the reply is ``Tool result: <content>``
and tool directives are ignored (so tool round trips end); the other
directives still apply.

Streams send a first ``{"role": "assistant", "content": ""}`` chunk (text
replies), the deltas, a chunk with an empty delta and the ``finish_reason``,
then, if ``stream_options.include_usage`` is true, a ``choices: []`` chunk with
``usage`` (every earlier chunk then carries ``"usage": null``, as OpenAI does).
Usage is a simple count: prompt_tokens = words in all message contents,
completion_tokens = deltas sent (words, or argument fragments).

Bookkeeping (thread-safe): ``requests`` lists every request to ``/v1/...`` as
``{"method", "path", "headers" (lower-cased), "body" (parsed JSON or None)}``;
``open_streams`` is the number of SSE responses in progress; ``disconnects``
counts clients that went away before a stream finished (stalls included), and
``disconnect_times`` holds the ``time.monotonic()`` of each, as the upstream
noticed it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import socket
import struct
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Self

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

MODEL_IDS = ("scripted-a", "scripted-b", "scripted-c")

_ERROR_KINDS = {
    400: ("invalid_request_error", "invalid_request"),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("invalid_request_error", "permission_denied"),
    404: ("invalid_request_error", "model_not_found"),
    429: ("requests", "rate_limit_exceeded"),
}
_CONTEXT_MESSAGE = (
    "This model's maximum context length is 8192 tokens. However, your messages "
    "resulted in 9000 tokens. Please reduce the length of the messages."
)
_QUOTA_MESSAGE = (
    "You exceeded your current quota, please check your plan and billing details. For more information "
    "on this error, read the docs: https://platform.openai.com/docs/guides/error-codes/api-errors."
)
_CONTENT_POLICY_MESSAGE = (
    "Your request was rejected as a result of our safety system. Your prompt may contain text that is "
    "not allowed by our safety system."
)


# What [[malformed:N]] sends: an SSE event whose data is cut-off JSON.
_GARBAGE = b'data: {"choices": [{"delta"\n\n'


class _DroppedConnection(Exception):
    """Raised by the app to make uvicorn close a connection mid-response."""


class _HideDrops(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], _DroppedConnection))


logging.getLogger("uvicorn.error").addFilter(_HideDrops())


# --------------------------------------------------------------------------- #
# Directives
# --------------------------------------------------------------------------- #

_DIRECTIVE = re.compile(
    r"\[\[(tool|error|slow|drop_after|reset_after|stall|malformed|finish|retry_after|empty|refusal|reasoning|thinking)(:|\]\])"
)
_TOOL_NAME = re.compile(r"\s*([A-Za-z0-9_.\-]+)\s*")
_VALUE = re.compile(r"\s*([^\]\s]+)\s*\]\]")
_BARE = ("empty", "refusal")  # directives that take no value
REFUSAL_TEXT = "I'm sorry, I can't help with that."


@dataclass
class Script:
    """What one chat completion request asks for (parsed directives)."""

    text: str = ""
    tools: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    error: str | None = None
    error_model: str | None = None
    slow_ms: int = 0
    drop_after: int | None = None
    reset_after: int | None = None
    stall_ms: int = 0
    stall_after: int | None = None  # None: before the response starts
    stall_model: str = ""  # only requests naming this model stall; "" means all
    malformed_after: int | None = None
    finish_reason: str | None = None
    retry_after: str = "1"
    empty: bool = False
    refusal: bool = False
    reasoning: str = ""  # streamed as reasoning_content before the reply
    thinking: str = ""  # streamed as signed thinking_blocks (LiteLLM's Anthropic shape)


def parse_directives(text: str) -> Script:
    """Parse directives out of ``text``; raises ``ValueError`` if malformed."""
    script, rest, pos = Script(), [], 0
    while m := _DIRECTIVE.search(text, pos):
        rest.append(text[pos : m.start()])
        kind, i = m.group(1), m.end()
        if (m.group(2) == "]]") != (kind in _BARE):
            raise ValueError(f"malformed {kind} directive at {m.start()}")
        if kind in _BARE:
            setattr(script, kind, True)
            pos = i
            continue
        if kind == "tool":
            name = _TOOL_NAME.match(text, i)
            if not name:
                raise ValueError(f"tool directive without a name at {m.start()}")
            args, i = {}, name.end()
            if text.startswith("{", i):
                args, i = json.JSONDecoder().raw_decode(text, i)
            end = re.compile(r"\s*\]\]").match(text, i)
            if not end:
                raise ValueError(f"unterminated tool directive at {m.start()}")
            script.tools.append((name.group(1), args))
            pos = end.end()
            continue
        value = _VALUE.match(text, i)
        if kind in ("retry_after", "reasoning", "thinking"):  # an HTTP date, or words, have spaces
            value = re.compile(r"\s*([^\]]+?)\s*\]\]").match(text, i)
        if not value:
            raise ValueError(f"malformed {kind} directive at {m.start()}")
        v = value.group(1)
        if kind == "error":
            script.error, _, model = v.partition("@")
            script.error_model = model or None
        elif kind == "slow":
            script.slow_ms = int(v)
        elif kind == "drop_after":
            script.drop_after = int(v)
        elif kind == "reset_after":
            script.reset_after = int(v)
        elif kind == "stall":
            spec, _, script.stall_model = v.partition("/")
            ms, _, after = spec.partition("@")
            script.stall_ms, script.stall_after = int(ms), int(after) if after else None
        elif kind == "malformed":
            script.malformed_after = int(v)
        elif kind == "finish":
            script.finish_reason = v
        elif kind == "reasoning":
            script.reasoning = v
        elif kind == "thinking":
            script.thinking = v
        else:
            script.retry_after = v
        pos = value.end()
    rest.append(text[pos:])
    script.text = " ".join("".join(rest).split())
    return script


def _text_of(content: Any) -> str:
    """Text of a message ``content``: a string or a list of content parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def _error_response(spec: str, message: str | None = None, retry_after: str = "1") -> JSONResponse:
    """OpenAI-style error for ``[[error:SPEC]]`` (SPEC is a status, ``context``,
    ``quota`` or ``content_filter``)."""
    if spec == "context":
        status, kind, code = 400, "invalid_request_error", "context_length_exceeded"
        message = message or _CONTEXT_MESSAGE
    elif spec == "quota":
        status, kind, code = 429, "insufficient_quota", "insufficient_quota"
        message = message or _QUOTA_MESSAGE
    elif spec == "content_filter":
        status, kind, code = 400, "invalid_request_error", "content_policy_violation"
        message = message or _CONTENT_POLICY_MESSAGE
    else:
        status = int(spec)
        kind, code = _ERROR_KINDS.get(status, ("server_error", "server_error"))
        message = message or f"Scripted upstream error {status}"
    body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
    rate_limited = status == 429 and spec != "quota"
    return JSONResponse(body, status, headers={"retry-after": retry_after} if rate_limited else None)


def _words(text: str) -> list[str]:
    """``text`` as the deltas it streams in: each word with its trailing space."""
    return re.findall(r"\S+\s*", text)


def minimal_instance(schema: Any, root: dict[str, Any], text: str, depth: int = 0) -> Any:
    """A small JSON value valid against the JSON Schema ``schema`` (``$ref``s
    resolve in ``root``); strings are ``text`` unless a format or pattern-free
    constraint says otherwise. See the module docstring for what it covers."""
    if not isinstance(schema, dict) or depth > 20:
        return None
    if "$ref" in schema:
        target: Any = root
        for part in schema["$ref"].removeprefix("#/").split("/"):
            target = target.get(part, {}) if part else target
        return minimal_instance(target, root, text, depth + 1)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("anyOf", "oneOf"):
        if schema.get(key):
            return minimal_instance(schema[key][0], root, text, depth + 1)
    if schema.get("allOf"):
        merged: dict[str, Any] = {}
        for part in schema["allOf"]:
            merged.update(part)
        return minimal_instance(merged, root, text, depth + 1)
    kind = schema.get("type", "object" if "properties" in schema else "string")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object":
        properties = schema.get("properties", {})
        return {
            name: minimal_instance(properties.get(name, {}), root, text, depth + 1)
            for name in schema.get("required", [])
        }
    if kind == "array":
        item = minimal_instance(schema.get("items", {}), root, text, depth + 1)
        return [item] * int(schema.get("minItems", 0))
    if kind in ("integer", "number"):
        low = schema.get("minimum", schema.get("exclusiveMinimum", -1) + 1)
        value = max(0, low) if schema.get("maximum", 0) >= 0 else schema["maximum"]
        return int(value) if kind == "integer" else float(value)
    if kind == "boolean":
        return False
    if kind == "null":
        return None
    formats = {
        "date-time": "2024-01-01T00:00:00Z",
        "date": "2024-01-01",
        "time": "00:00:00",
        "uuid": "00000000-0000-4000-8000-000000000000",
        "email": "echo@example.com",
        "uri": "https://example.com/",
    }
    value = formats.get(schema.get("format", ""), text)
    return value.ljust(int(schema.get("minLength", 0)), "x")


def _formatted(response_format: Any, text: str) -> str:
    """The reply text for ``response_format``: ``Echo: text``, or JSON (module docstring)."""
    kind = response_format.get("type") if isinstance(response_format, dict) else None
    if kind == "json_object":
        return json.dumps({"echo": text})
    if kind == "json_schema":
        schema = (response_format.get("json_schema") or {}).get("schema") or {}
        return json.dumps(minimal_instance(schema, schema, text))
    return f"Echo: {text}"


def _split(s: str, parts: int) -> list[str]:
    """Split ``s`` into ``parts`` (at most len(s)) non-empty pieces."""
    parts = max(1, min(parts, len(s)))
    size = -(-len(s) // parts)
    return [s[i : i + size] for i in range(0, len(s), size)]


# --------------------------------------------------------------------------- #
# The app
# --------------------------------------------------------------------------- #


class UpstreamState:
    """Thread-safe record of requests, open streams and disconnects."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: list[dict[str, Any]] = []
        self._open_streams = 0
        self._disconnects = 0
        self._disconnect_times: list[float] = []

    @property
    def requests(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._requests)

    @property
    def open_streams(self) -> int:
        with self._lock:
            return self._open_streams

    @property
    def disconnects(self) -> int:
        with self._lock:
            return self._disconnects

    @property
    def disconnect_times(self) -> list[float]:
        with self._lock:
            return list(self._disconnect_times)

    def reset(self) -> None:
        """Forget recorded requests and zero ``disconnects``."""
        with self._lock:
            self._requests.clear()
            self._disconnects = 0
            self._disconnect_times.clear()

    def _record(self, entry: dict[str, Any]) -> None:
        with self._lock:
            self._requests.append(entry)

    def _add(self, open_streams: int = 0, disconnects: int = 0, at: float | None = None) -> None:
        with self._lock:
            self._open_streams += open_streams
            self._disconnects += disconnects
            if disconnects:
                self._disconnect_times.append(at if at is not None else time.monotonic())


class _Completion:
    """Builds the chunks / final object for one request."""

    def __init__(self, body: dict[str, Any], script: Script, tool_reply: str | None) -> None:
        self.id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        self.created = int(time.time())
        self.model = body.get("model", "")
        self.include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        self.prompt_tokens = sum(len(_text_of(m.get("content")).split()) for m in body.get("messages", []))
        self.tool_calls: list[dict[str, Any]] = []
        if tool_reply is None and script.tools:
            self.text = None
            self.finish_reason = "tool_calls"
            for name, args in script.tools:
                self.tool_calls.append(
                    {
                        "id": f"call_{uuid.uuid4().hex[:24]}",
                        "type": "function",
                        "function": {"name": name, "arguments": json.dumps(args)},
                    }
                )
        else:
            self.text = tool_reply if tool_reply is not None else _formatted(body.get("response_format"), script.text)
            self.finish_reason = "stop"
        self.refusal: str | None = None
        if script.refusal:
            self.text, self.tool_calls, self.refusal = None, [], REFUSAL_TEXT
        if script.empty:
            self.text, self.tool_calls, self.finish_reason = "", [], "stop"
        self.finish_reason = script.finish_reason or self.finish_reason
        self.reasoning, self.thinking = script.reasoning, script.thinking
        self.logprobs = body.get("logprobs") is True
        self.top_logprobs = body.get("top_logprobs") if isinstance(body.get("top_logprobs"), int) else 0
        self._position = 0  # words given logprobs so far

    def token_logprobs(self, text: str) -> list[dict[str, Any]]:
        """OpenAI's ``logprobs.content`` entries for the words of ``text``."""
        out = []
        for word in _words(text):
            self._position += 1
            top = [
                {"token": f"alt{k}", "logprob": -1.0 - k, "bytes": list(f"alt{k}".encode())}
                for k in range(self.top_logprobs)
            ]
            entry = {"token": word, "logprob": -0.01 * self._position, "bytes": list(word.encode())}
            out.append({**entry, "top_logprobs": top})
        return out

    def deltas(self) -> list[dict[str, Any]]:
        """Deltas after the role chunk: reasoning and thinking first, then words,
        or tool headers + fragments."""
        thinking: list[dict[str, Any]] = [{"reasoning_content": w} for w in _words(self.reasoning)]
        if self.thinking:
            pieces = [{"type": "thinking", "thinking": w} for w in _words(self.thinking)]
            signature = "sig-" + hashlib.sha256(self.thinking.encode()).hexdigest()[:16]
            pieces.append({"type": "thinking", "thinking": "", "signature": signature})
            thinking += [{"thinking_blocks": [piece]} for piece in pieces]
        return thinking + self._reply_deltas()

    def _reply_deltas(self) -> list[dict[str, Any]]:
        if self.refusal is not None:
            return [{"refusal": w} for w in _words(self.refusal)]
        if self.text is not None:
            return [{"content": w} for w in _words(self.text)]
        out: list[dict[str, Any]] = []
        for index, call in enumerate(self.tool_calls):
            args = call["function"]["arguments"]
            header = {**call, "function": {"name": call["function"]["name"], "arguments": ""}}
            out.append({"tool_calls": [{"index": index, **header}]})
            for frag in _split(args, max(2, len(args) // 8)):
                out.append({"tool_calls": [{"index": index, "function": {"arguments": frag}}]})
        return out

    def usage(self, completion_tokens: int) -> dict[str, Any]:
        usage: dict[str, Any] = {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": self.prompt_tokens + completion_tokens,
        }
        if self.reasoning:
            usage["completion_tokens_details"] = {"reasoning_tokens": len(_words(self.reasoning))}
        return usage

    def chunk(
        self, delta: dict[str, Any] | None, finish_reason: str | None = None, usage: dict[str, int] | None = None
    ) -> bytes:
        obj: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": "fp_scripted",
            "choices": [],
        }
        if delta is not None:
            logprobs = None
            if self.logprobs and delta.get("content"):
                logprobs = {"content": self.token_logprobs(delta["content"]), "refusal": None}
            obj["choices"] = [{"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish_reason}]
        if self.include_usage:
            obj["usage"] = usage
        return f"data: {json.dumps(obj)}\n\n".encode()

    def completion(self) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": self.text, "refusal": self.refusal}
        if self.reasoning:
            message["reasoning_content"] = self.reasoning
        if self.tool_calls:
            message["tool_calls"] = self.tool_calls
        logprobs = None
        if self.logprobs and self.text:
            logprobs = {"content": self.token_logprobs(self.text), "refusal": None}
        return {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": "fp_scripted",
            "choices": [{"index": 0, "message": message, "logprobs": logprobs, "finish_reason": self.finish_reason}],
            "usage": self.usage(len(self.deltas())),
        }


def _reset(send: Send) -> None:
    """Resets the connection under ``send`` (TCP RST: SO_LINGER 0, then abort)."""
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    if transport is None:
        raise _DroppedConnection()
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


class _ScriptedResponse(Response):
    """Raw ASGI response that can stream, go slow, stall, reset and drop the connection."""

    def __init__(self, state: UpstreamState, completion: _Completion, script: Script, stream: bool, raw_send: Send):
        self.state, self.c, self.script, self.stream = state, completion, script, stream
        self.raw_send = raw_send

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.stream:
            await self._stream(receive, send)
        else:
            await self._complete(send)

    async def _complete(self, send: Send) -> None:
        await asyncio.sleep((self.script.slow_ms * len(self.c.deltas()) + self.script.stall_ms) / 1000)
        body = json.dumps(self.c.completion()).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        if self.script.drop_after is not None or self.script.reset_after is not None:
            await send({"type": "http.response.body", "body": body[: len(body) // 2], "more_body": True})
            if self.script.reset_after is not None:
                _reset(self.raw_send)
                return
            raise _DroppedConnection()
        await send({"type": "http.response.body", "body": body})

    async def _stream(self, receive: Receive, send: Send) -> None:
        gone = asyncio.Event()
        gone_at: list[float] = []

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            gone_at.append(time.monotonic())
            gone.set()

        async def pause(seconds: float) -> None:
            try:
                await asyncio.wait_for(gone.wait(), seconds)
            except TimeoutError:
                pass

        def left() -> None:
            self.state._add(disconnects=1, at=gone_at[0] if gone_at else None)

        watcher = asyncio.create_task(watch())
        self.state._add(open_streams=1)
        c, script, delay = self.c, self.script, self.script.slow_ms / 1000
        try:
            if script.stall_ms and script.stall_after is None:
                await pause(script.stall_ms / 1000)
                if gone.is_set():
                    return left()
            headers = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            deltas = c.deltas()
            first: dict[str, Any] = {"role": "assistant", "content": ""}
            if c.tool_calls:  # OpenAI puts the first tool header in the role chunk
                first = {"role": "assistant", "content": None, **deltas.pop(0)}
            elif c.refusal is not None:
                first = {"role": "assistant", "content": None, "refusal": ""}
            chunks = [c.chunk(first)] + [c.chunk(d) for d in deltas]
            for n, data in enumerate(chunks):
                if n > 0 and delay:
                    await pause(delay)
                if n > 0 and script.stall_ms and script.stall_after == n - 1:
                    await pause(script.stall_ms / 1000)
                if gone.is_set():
                    return left()
                if script.drop_after is not None and n > script.drop_after:
                    raise _DroppedConnection()
                if script.reset_after is not None and n > script.reset_after:
                    _reset(self.raw_send)
                    return
                if script.malformed_after is not None and n == script.malformed_after + 1:
                    await send({"type": "http.response.body", "body": _GARBAGE, "more_body": True})
                await send({"type": "http.response.body", "body": data, "more_body": True})
            if script.drop_after is not None:
                raise _DroppedConnection()
            if script.reset_after is not None:
                _reset(self.raw_send)
                return
            await asyncio.sleep(0)  # let the watcher see a disconnect that raced the last delta
            if gone.is_set():
                return left()
            watcher.cancel()  # completing the response also wakes receive()
            tail = b""
            if script.malformed_after is not None and script.malformed_after + 1 >= len(chunks):
                tail += _GARBAGE
            tail += c.chunk({}, c.finish_reason)
            if c.include_usage:
                n_sent = len(deltas) + (1 if c.tool_calls else 0)
                tail += c.chunk(None, usage=c.usage(n_sent))
            tail += b"data: [DONE]\n\n"
            await send({"type": "http.response.body", "body": tail, "more_body": False})
        finally:
            watcher.cancel()
            self.state._add(open_streams=-1)


class _App(Starlette):
    """Starlette that passes uvicorn's own ``send`` on in the scope, so a
    response can reach the connection's transport (to reset it)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope["scripted.raw_send"] = send
        await super().__call__(scope, receive, send)


def create_app(state: UpstreamState | None = None) -> Starlette:
    """The upstream ASGI app; bookkeeping goes to ``state`` (``app.state.upstream``)."""
    state = state or UpstreamState()

    async def record(request: Request) -> Any:
        raw = await request.body()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        state._record(
            {
                "method": request.method,
                "path": request.url.path,
                "headers": {k.lower(): v for k, v in request.headers.items()},
                "body": body,
            }
        )
        return body

    async def models(request: Request) -> Response:
        await record(request)
        data = [{"id": m, "object": "model", "created": 1700000000, "owned_by": "scripted"} for m in MODEL_IDS]
        return JSONResponse({"object": "list", "data": data})

    async def chat_completions(request: Request) -> Response:
        body = await record(request)
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            return _error_response("400", "body must be a JSON object with a messages list")
        messages = body["messages"]
        users = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
        try:
            script = parse_directives(_text_of(users[-1].get("content")) if users else "")
            if script.error is not None and script.error_model in (None, body.get("model")):
                return _error_response(script.error, retry_after=script.retry_after)
            if script.stall_model and script.stall_model != body.get("model"):
                script.stall_ms = 0
        except ValueError as e:
            return _error_response("400", f"bad directive: {e}")
        last = messages[-1] if messages and isinstance(messages[-1], dict) else {}
        tool_reply = f"Tool result: {_text_of(last.get('content'))}" if last.get("role") == "tool" else None
        completion = _Completion(body, script, tool_reply)
        raw_send = request.scope["scripted.raw_send"]
        return _ScriptedResponse(state, completion, script, bool(body.get("stream")), raw_send)

    async def get_requests(request: Request) -> Response:
        return JSONResponse(state.requests)

    async def reset(request: Request) -> Response:
        state.reset()
        return JSONResponse({"ok": True})

    app = _App(
        routes=[
            Route("/v1/models", models, methods=["GET"]),
            Route("/v1/chat/completions", chat_completions, methods=["POST"]),
            Route("/_requests", get_requests, methods=["GET"]),
            Route("/_reset", reset, methods=["POST"]),
        ]
    )
    app.state.upstream = state
    return app


# --------------------------------------------------------------------------- #
# The server
# --------------------------------------------------------------------------- #


class ScriptedUpstream:
    """Runs ``create_app()`` with uvicorn in a daemon thread on 127.0.0.1.

    ``start()`` returns once the server accepts connections (idempotent);
    ``stop()`` shuts it down (open streams get ~1 s). Also a context manager.
    """

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port: int | None = None
        self.state = UpstreamState()
        self.app = create_app(self.state)
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """Server root, ``http://127.0.0.1:PORT``."""
        if self.port is None:
            raise RuntimeError("ScriptedUpstream is not started")
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """OpenAI base URL, ``http://127.0.0.1:PORT/v1``."""
        return f"{self.url}/v1"

    @property
    def requests(self) -> list[dict[str, Any]]:
        """Copy of the recorded requests (see module docstring for the shape)."""
        return self.state.requests

    @property
    def open_streams(self) -> int:
        """Number of streaming responses currently in progress."""
        return self.state.open_streams

    @property
    def disconnects(self) -> int:
        """Number of streams whose client disconnected before the end."""
        return self.state.disconnects

    @property
    def disconnect_times(self) -> list[float]:
        """``time.monotonic()`` of each disconnect, when the upstream saw it."""
        return self.state.disconnect_times

    def reset(self) -> None:
        """Clear recorded requests and the disconnect count."""
        self.state.reset()

    def start(self, timeout: float = 10.0) -> Self:
        if self._thread is not None:
            return self
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, 0))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app,
            log_level="warning",
            access_log=False,
            lifespan="off",
            http="h11",
            timeout_graceful_shutdown=1,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name="scripted-upstream", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("scripted upstream failed to start")
            time.sleep(0.01)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        if self._server is None or self._thread is None:
            return
        self._server.should_exit = True
        self._thread.join(timeout)
        if self._thread.is_alive():
            self._server.force_exit = True
            self._thread.join(timeout)
        self._server = self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
