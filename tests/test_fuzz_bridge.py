"""Fuzzing the JSON bridge: schemathesis generates valid and invalid requests
for every operation of ``/openapi.json``, and hypothesis generates chat
completion bodies (every parameter, with wrong types, integers past 64 bits,
extra fields) and headers for ``/v1/chat/completions``. Nothing may answer
500 (or any 5xx: the offline model cannot fail upstream), nothing may be
lost (every turn the bridge reported is stored, no reply is left in
progress), and a refused request stores nothing.

Bounded in time: a few examples per operation and mode, no shrinking database,
all against a dedicated agentapi on its own SQLite file (the fuzzer creates,
updates and deletes freely).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import string
from pathlib import Path
from typing import Any

import httpx
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from server.store.migrate import upgrade
from tests.stack import MASTER_KEY, start_stack

EXAMPLES_PER_OPERATION = 6
CHAT_EXAMPLES = 60
HEADERS = {"Authorization": f"Bearer {MASTER_KEY}"}
FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES_PER_OPERATION,
    deadline=None,
    database=None,
    phases=[Phase.explicit, Phase.generate],  # no shrinking: a failure is reported as found
    suppress_health_check=list(HealthCheck),
)


def fuzz_openapi(document: dict[str, Any], base_url: str) -> tuple[int, list[str], list[dict[str, Any]]]:
    """Runs every operation in both modes. Returns (requests made, 5xx failures, sendMessage replies)."""
    schema = schemathesis.openapi.from_dict(document)
    failures: list[str] = []
    replies: list[dict[str, Any]] = []
    calls = 0
    session = requests.Session()
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in schemathesis.GenerationMode:

            @FUZZ_SETTINGS
            @given(case=operation.as_strategy(generation_mode=mode))
            def run(case: schemathesis.Case) -> None:
                nonlocal calls
                calls += 1
                response = case.call(base_url=base_url, session=session, headers=HEADERS, timeout=30)
                if response.status_code >= 500:
                    failures.append(
                        f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:300]}"
                    )
                elif response.status_code == 200 and case.path.endswith(":sendMessage"):
                    replies.append(response.json())

            try:
                run()
            except Unsatisfiable:
                # An operation with no inputs (GET /healthz) has no negative cases.
                if mode is schemathesis.GenerationMode.POSITIVE:
                    raise
    return calls, failures, replies


JSON_SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
JSON_VALUES = st.recursive(
    JSON_SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
)
ROLES = st.sampled_from(["user", "system", "developer", "assistant", "tool", "robot", ""])
MESSAGE = st.fixed_dictionaries(
    {"role": ROLES},
    optional={
        "content": st.text(max_size=40)
        | st.none()
        | st.lists(st.fixed_dictionaries({"type": st.just("text"), "text": st.text(max_size=10)}), max_size=2)
        | JSON_VALUES,
        "tool_call_id": st.text(max_size=10),
        "name": st.text(max_size=10),
    },
)
# Integers past 64 bits, booleans and nested junk where numbers belong.
NUMBERS = st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.booleans() | JSON_VALUES
TOOL = st.fixed_dictionaries(
    {"type": st.sampled_from(["function", "other"]), "function": st.fixed_dictionaries({"name": st.text(max_size=8)})}
)
CHAT_BODY = st.fixed_dictionaries(
    {},
    optional={
        "model": st.sampled_from(["agentapi-offline", "agent:none", "", "other"]) | JSON_VALUES,
        "messages": st.lists(MESSAGE, max_size=3) | JSON_VALUES,
        "stream": st.booleans() | JSON_VALUES,
        "temperature": st.floats(-1, 3, allow_nan=False) | JSON_VALUES,
        "max_tokens": st.integers(-5, 100) | NUMBERS,
        "max_completion_tokens": st.integers(-5, 100) | NUMBERS,
        "n": st.integers(0, 3) | NUMBERS,
        "seed": NUMBERS,
        "top_p": NUMBERS,
        "stop": st.lists(st.text(max_size=5), max_size=5) | JSON_VALUES,
        "logprobs": st.booleans() | JSON_VALUES,
        "top_logprobs": NUMBERS,
        "logit_bias": st.dictionaries(st.text(max_size=5), NUMBERS, max_size=2) | JSON_VALUES,
        "metadata": st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3) | JSON_VALUES,
        "response_format": st.sampled_from(
            [{"type": "json_object"}, {"type": "text"}, {"type": "json_schema", "json_schema": {"name": "x"}}]
        )
        | JSON_VALUES,
        "tool_choice": st.sampled_from(["auto", "none", "required", {"type": "function", "function": {"name": "f"}}])
        | JSON_VALUES,
        "tools": st.lists(TOOL, max_size=2) | JSON_VALUES,
        "stream_options": st.just({"include_usage": True}) | JSON_VALUES,
        "custom_extra": JSON_VALUES,
    },
)
USER = {"role": "user", "content": "hi"}
# Without leading or trailing spaces, which HTTP clients refuse to send.
HEADER_TEXT = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=255), max_size=300).map(
    lambda value: value.strip(" ")
)
CHAT_HEADERS = st.fixed_dictionaries(
    {},
    optional={
        "Idempotency-Key": HEADER_TEXT | st.text(alphabet=string.ascii_letters, min_size=1, max_size=8),
        "X-Session-Id": HEADER_TEXT,
    },
)


def _deep(depth: int) -> Any:
    value: Any = {}
    for _ in range(depth):
        value = {"a": [value]}
    return value


# Bodies that once answered 500 (issue 13), tried first on every run.
KNOWN_BAD: list[dict[str, Any]] = [
    {"model": "agentapi-offline", "messages": [{"role": {"r": 1}, "content": "x"}]},
    {"model": "agentapi-offline", "messages": [{"role": "assistant", "tool_calls": "x"}, USER]},
    {"model": "agentapi-offline", "messages": [USER], "max_tokens": True},
    {"model": "agentapi-offline", "messages": [USER], "max_tokens": 2**70},
    {"model": "agentapi-offline", "messages": [USER], "seed": 2**64},
    {"model": "agentapi-offline", "messages": [{"role": "user", "content": "\ud800"}]},
    {"model": "agentapi-offline", "messages": [USER], "stream": True, "stream_options": "yes"},
    {"model": "agentapi-offline", "messages": [USER], "tools": [{"type": "function", "function": _deep(60)}]},
    {"model": "agentapi-offline", "messages": [USER], "extra": _deep(150)},
]


def _known_bad_examples(test: Any) -> Any:
    for body in KNOWN_BAD:
        test = example(body=body, headers={}, raw=False)(test)
    return test


def _counts(database: Path) -> tuple[int, int]:
    """(sessions, messages) stored in the fuzzed SQLite file."""
    with contextlib.closing(sqlite3.connect(database)) as connection:
        sessions = connection.execute("SELECT COUNT(*) FROM sessions").fetchone()[0]
        messages = connection.execute("SELECT COUNT(*) FROM messages").fetchone()[0]
    return sessions, messages


def fuzz_chat(base_url: str, database: Path) -> tuple[list[str], list[str]]:
    """Returns (failures: a 5xx, or a refused request that stored something;
    session ids of completed non-streamed turns)."""
    failures: list[str] = []
    sessions: list[str] = []
    session = requests.Session()

    @settings(FUZZ_SETTINGS, max_examples=CHAT_EXAMPLES)
    @given(body=CHAT_BODY, headers=CHAT_HEADERS, raw=st.booleans())
    @_known_bad_examples
    def run(body: dict[str, Any], headers: dict[str, str], raw: bool) -> None:
        data = json.dumps(body).encode() if not raw else json.dumps(body)[:-1].encode()  # raw: cut-off JSON
        encoded = {k: v.encode("latin-1") for k, v in headers.items()}
        before = _counts(database)
        response = session.post(
            f"{base_url}/v1/chat/completions", data=data, headers={**HEADERS, **encoded}, timeout=30
        )
        if response.status_code >= 500:
            failures.append(f"{body!r} {headers!r} -> {response.status_code}: {response.text[:300]}")
        elif response.status_code >= 400:
            after = _counts(database)
            # Refused by the bridge's own validation: nothing at all; refused by the
            # server: no message, and the session the bridge opened first is
            # deleted again, unless the request was keyed (its idempotency record
            # names that session).
            refused_by_bridge = response.json()["error"]["code"] == "invalid_request"
            unkeyed = "Idempotency-Key" not in headers
            if after[1] != before[1] or ((refused_by_bridge or unkeyed) and after != before):
                failures.append(f"{body!r} -> {response.status_code} stored {before} -> {after}: {response.text[:200]}")
        elif response.status_code == 200 and not body.get("stream"):
            sessions.append(response.headers["x-session-id"])

    run()
    return failures, sessions


async def test_fuzz_the_bridge(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'fuzz.db'}"
    await asyncio.to_thread(upgrade, url)
    stack = await start_stack(url, runner_id="fuzz")
    try:
        async with httpx.AsyncClient(base_url=stack.bridge_url) as client:
            document = (await client.get("/openapi.json")).json()
        calls, failures, replies = await asyncio.to_thread(fuzz_openapi, document, stack.bridge_url)
        chat_failures, chat_sessions = await asyncio.to_thread(fuzz_chat, stack.bridge_url, tmp_path / "fuzz.db")
        print(f"\nfuzzed {calls} operation requests and {CHAT_EXAMPLES} chat completions")
        assert not failures + chat_failures, "\n".join(failures + chat_failures)
        assert calls >= len(document["paths"])

        engine = create_async_engine(url)
        try:
            async with engine.connect() as connection:
                ids = {row[0] for row in await connection.execute(text("SELECT id FROM messages"))}
                unfinished = (
                    await connection.execute(text("SELECT COUNT(*) FROM messages WHERE status = 'in_progress'"))
                ).scalar_one()
                for session_id in chat_sessions:
                    count = (
                        await connection.execute(
                            text("SELECT COUNT(*) FROM messages WHERE session_id = :s AND role = 'assistant'"),
                            {"s": session_id},
                        )
                    ).scalar_one()
                    assert count >= 1, f"session {session_id} answered 200 but stored no reply"
        finally:
            await engine.dispose()
        for reply in replies:
            stored = [reply["message"]["id"], *(m["id"] for m in reply.get("inputMessages", []))]
            assert set(stored) <= ids, "a turn answered 200 is not stored"
        assert unfinished == 0, "a reply was left in progress"
    finally:
        await stack.stop()
