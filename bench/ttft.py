"""Time to first token, side by side, in one run (the seed of issue 7's harness).

Arms, interleaved turn by turn with the same client loop:
  A   client -> scripted upstream (direct, httpx + SSE)
  B   client -> LiteLLM proxy -> upstream
  C   client -> agentapi gRPC (SendStreamingMessage, SQLite) -> upstream
  C'  client -> agentapi gRPC -> LiteLLM proxy -> upstream

Run: .venv/bin/python -m bench.ttft [turns]   (needs `make litellm` first)
Prints p50/p99 TTFT per arm and the added TTFT of each arm over A.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
from httpx_sse import aconnect_sse

from agentapi import v1 as pb
from server.store.migrate import upgrade
from tests.stack import AUTH, start_stack
from tests.support.litellm_proxy import LiteLLMProxy
from tests.support.upstream import ScriptedUpstream

PROMPT = "one two three four five six seven eight"


async def openai_ttft(client: httpx.AsyncClient, url: str, key: str) -> float:
    body = {"model": "scripted-a", "stream": True, "messages": [{"role": "user", "content": PROMPT}]}
    started = time.perf_counter()
    elapsed = None
    async with aconnect_sse(client, "POST", url, json=body, headers={"Authorization": f"Bearer {key}"}) as source:
        async for event in source.aiter_sse():
            if elapsed is None and event.data != "[DONE]":
                choices = json.loads(event.data)["choices"]
                if choices and choices[0].get("delta", {}).get("content"):
                    elapsed = time.perf_counter() - started
    assert elapsed is not None, "no content delta"
    return elapsed


async def grpc_ttft(stack, session_id: str) -> float:  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    elapsed = None
    request = pb.SendStreamingMessageRequest(
        session_id=session_id, messages=[pb.InputMessage(role=pb.ROLE_USER, content=PROMPT)]
    )
    async for event in stack.sessions.SendStreamingMessage(request, metadata=AUTH):
        if elapsed is None and event.HasField("delta") and event.delta.content:
            elapsed = time.perf_counter() - started
    assert elapsed is not None
    return elapsed


def summary(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered) * 1000, ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000


async def main(turns: int) -> None:
    with ScriptedUpstream() as upstream, LiteLLMProxy(upstream.base_url) as proxy, tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}"
        await asyncio.to_thread(upgrade, url)
        direct = await start_stack(url, upstream.base_url, "unused")
        via_proxy = await start_stack(url, f"{proxy.base_url}/v1", proxy.master_key)
        sessions = {}
        for name, stack in (("C", direct), ("C'", via_proxy)):
            created = await stack.sessions.CreateSession(
                pb.CreateSessionRequest(session=pb.Session(overrides=pb.SessionSettings(model="scripted-a"))),
                metadata=AUTH,
            )
            sessions[name] = created.session.id
        results: dict[str, list[float]] = {"A": [], "B": [], "C": [], "C'": []}
        async with httpx.AsyncClient(timeout=30) as client:
            for _ in range(turns):
                results["A"].append(await openai_ttft(client, f"{upstream.base_url}/chat/completions", "x"))
                results["B"].append(
                    await openai_ttft(client, f"{proxy.base_url}/v1/chat/completions", proxy.master_key)
                )
                results["C"].append(await grpc_ttft(direct, sessions["C"]))
                results["C'"].append(await grpc_ttft(via_proxy, sessions["C'"]))
        await direct.stop()
        await via_proxy.stop()
    base50, base99 = summary(results["A"])
    print(f"{'arm':4} {'p50 ms':>8} {'p99 ms':>8} {'added p50':>10} {'added p99':>10}")
    for arm, samples in results.items():
        p50, p99 = summary(samples)
        print(f"{arm:4} {p50:8.2f} {p99:8.2f} {p50 - base50:10.2f} {p99 - base99:10.2f}")


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 100))
