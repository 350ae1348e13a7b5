"""What tracing costs (issue 17): CPU per turn and time to first token of
``agentapi serve`` with tracing off and on, and of the commit before
observability, in one run, arms interleaved turn by turn.

    python -m bench.tracecost [--turns 300] [--base cec0e6a]

Arms, each its own ``agentapi serve --migrate`` process on its own SQLite file,
all against one bench upstream (``bench.upstream``):

- ``base``: the commit before observability (``--base``; a ``git archive``
  snapshot under bench/.cache/), no metrics, no request log, no tracing code;
- ``off``: this tree as shipped, no ``OTEL_*`` set: tracing off (metrics and
  the request log on, as always);
- ``on``: this tree with ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` pointing at a
  local OTLP/HTTP receiver (``bench.otlpsink``, standing in for a collector),
  the SDK's default batch processor.

A turn is a two-step run over gRPC ``SendStreamingMessage`` (an agent with the
built-in ``echo`` tool, model ``tool-16``: a tool call, the server runs echo,
then 16 deltas), so it has every span: the gRPC server span, ``invoke_agent``,
two ``chat`` spans and one ``execute_tool``. Per arm: CPU per turn is the
server process's whole CPU time (all threads: the exporter's too) over the
measured turns divided by their number; TTFT is request sent to the first
content delta at the client. Blocks of 50 turns give the spread of CPU per
turn. Prints one JSON document; writes it to bench/.cache/tracecost-<time>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc
import httpx
import psutil

from bench import procs
from bench.run import CACHE, stats_ms

BLOCK = 50


def snapshot(ref: str) -> Path:
    """``ref``'s tree as a git archive under bench/.cache/ (reused when present)."""
    sha = subprocess.run(["git", "rev-parse", "--verify", f"{ref}^{{commit}}"], cwd=procs.REPO, capture_output=True,
                         text=True, check=True).stdout.strip()  # fmt: skip
    CACHE.mkdir(exist_ok=True)
    dest = CACHE / f"src-{sha[:12]}"
    if not dest.exists():
        tmp = Path(tempfile.mkdtemp(prefix="src-", dir=CACHE))
        archive = subprocess.run(["git", "archive", sha], cwd=procs.REPO, capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(tmp)], input=archive, check=True)
        tmp.rename(dest)
    return dest


def start_server(name: str, logs: Path, source: Path, upstream_url: str, extra_env: dict[str, str]) -> procs.Proc:
    grpc_port, http_port = procs.free_port(), procs.free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")} | {
        "AGENTAPI_DATABASE_URL": f"sqlite+aiosqlite:///{logs / name}.db",
        "AGENTAPI_LLM_BASE_URL": upstream_url,
        "AGENTAPI_LLM_API_KEY": "unused",
        "AGENTAPI_MASTER_KEY": procs.MASTER_KEY,
        "AGENTAPI_GRPC_ADDR": f"127.0.0.1:{grpc_port}",
        "AGENTAPI_HTTP_ADDR": f"127.0.0.1:{http_port}",
        "AGENTAPI_RUNNER_ID": f"bench-{name}",
        "PYTHONPATH": f"{source}{os.pathsep}{source / 'clients' / 'python' / 'src'}",
        **extra_env,
    }
    log = open(logs / f"{name}.log", "wb")  # noqa: SIM115 - the child owns it
    popen = subprocess.Popen(
        [sys.executable, "-m", "server.cli", "serve", "--migrate"],
        cwd=source, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    log.close()
    proc = procs.Proc(name, popen, logs / f"{name}.log", {"grpc": grpc_port, "http": http_port})
    procs.wait_http(proc, f"http://127.0.0.1:{http_port}/healthz")
    return proc


async def measure(turns: int, base_ref: str, warm: int = 20) -> dict[str, Any]:
    from agentapi import v1 as pb

    auth = (("authorization", f"Bearer {procs.MASTER_KEY}"),)
    CACHE.mkdir(exist_ok=True)
    logs = Path(tempfile.mkdtemp(prefix="tracecost-", dir=CACHE))
    started: list[procs.Proc] = []
    try:
        upstream = procs.start_upstream(logs, 20.0, 16)
        started.append(upstream)
        upstream_url = f"http://127.0.0.1:{upstream.ports['http']}/v1"
        sink = procs._spawn("otlpsink", [sys.executable, "-m", "bench.otlpsink"], logs)
        started.append(sink)
        sink_port = int(procs._wait_for_lines(sink, "listening ", 1)[0].split()[1])
        arms = {
            "base": start_server("base", logs, snapshot(base_ref), upstream_url, {}),
            "off": start_server("off", logs, procs.REPO, upstream_url, {}),
            "on": start_server("on", logs, procs.REPO, upstream_url, {
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"http://127.0.0.1:{sink_port}/v1/traces"}),
        }  # fmt: skip
        started.extend(arms.values())
        channels = {name: grpc.aio.insecure_channel(f"127.0.0.1:{p.ports['grpc']}") for name, p in arms.items()}
        stubs = {name: (pb.AgentServiceStub(ch), pb.SessionServiceStub(ch)) for name, ch in channels.items()}
        agents = {}
        for name, (agents_stub, _) in stubs.items():
            agent = pb.Agent(key=f"tracecost-{name}", default_model="tool-16", builtin_tools=["echo"])
            agents[name] = (await agents_stub.CreateAgent(pb.CreateAgentRequest(agent=agent), metadata=auth)).agent
        sessions: dict[str, list[str]] = {name: [] for name in arms}
        for name, (_, sessions_stub) in stubs.items():
            for _ in range((turns + warm) // 8 + 2):
                request = pb.CreateSessionRequest(session=pb.Session(agent_id=agents[name].id))
                sessions[name].append((await sessions_stub.CreateSession(request, metadata=auth)).session.id)
        cpu_proc = {name: psutil.Process(p.pid) for name, p in arms.items()}
        ttft: dict[str, list[float]] = {name: [] for name in arms}
        cpu_total = {name: 0.0 for name in arms}
        blocks: dict[str, list[float]] = {name: [] for name in arms}

        def cpu_of(name: str) -> float:
            times = cpu_proc[name].cpu_times()
            return times.user + times.system

        async def one_turn(name: str, index: int) -> None:
            _, sessions_stub = stubs[name]
            request = pb.SendStreamingMessageRequest(
                session_id=sessions[name][index // 8], messages=[pb.InputMessage(role=pb.ROLE_USER, content="go")]
            )
            sent, first = time.perf_counter(), None
            async for event in sessions_stub.SendStreamingMessage(request, metadata=auth):
                if first is None and event.HasField("delta") and event.delta.content:
                    first = time.perf_counter()
                if event.HasField("assistant_message"):
                    final = event.assistant_message
            assert final.status == pb.MESSAGE_STATUS_COMPLETED and final.step == 2, (name, final)
            if index >= warm:
                ttft[name].append((first or time.perf_counter()) - sent)

        order = list(arms)
        for index in range(warm):
            for name in order:
                await one_turn(name, index)
        await asyncio.sleep(6)  # the "on" arm's warm-up spans exported (the batch delay is 5 s)
        marks = {name: cpu_of(name) for name in arms}
        block_marks = dict(marks)
        for index in range(warm, warm + turns):
            rotated = order[index % 3 :] + order[: index % 3]
            for name in rotated:
                await one_turn(name, index)
            if (index - warm + 1) % BLOCK == 0:
                for name in arms:
                    now = cpu_of(name)
                    blocks[name].append((now - block_marks[name]) / BLOCK * 1000)
                    block_marks[name] = now
        await asyncio.sleep(6)  # the last spans exported: their CPU counts
        for name in arms:
            cpu_total[name] = cpu_of(name) - marks[name]
        async with httpx.AsyncClient() as http:
            exported = int((await http.get(f"http://127.0.0.1:{sink_port}/count")).text)
        for channel in channels.values():
            await channel.close()
        per_turn = {name: cpu_total[name] / turns * 1000 for name in arms}
        p50 = {name: stats_ms(ttft[name])["p50"] for name in arms}
        return {
            "turns_per_arm": turns,
            "turn": "two-step run (tool-16 with echo), gRPC SendStreamingMessage, SQLite",
            "base_ref": base_ref,
            "cpu_ms_per_turn": {name: round(v, 3) for name, v in per_turn.items()},
            "cpu_ms_per_turn_blocks": {name: [round(v, 2) for v in blocks[name]] for name in arms},
            "ttft_ms": {name: stats_ms(ttft[name]) for name in arms},
            "spans_exported": exported,
            "on_vs_off_cpu": round(per_turn["on"] / per_turn["off"] - 1, 4),
            "off_vs_base_cpu": round(per_turn["off"] / per_turn["base"] - 1, 4),
            "on_minus_off_ttft_p50_ms": round(p50["on"] - p50["off"], 3),
            "off_minus_base_ttft_p50_ms": round(p50["off"] - p50["base"], 3),
        }
    finally:
        for proc in reversed(started):
            proc.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, default=300)
    parser.add_argument("--base", default="cec0e6a", help="the commit before observability")
    args = parser.parse_args()
    result = asyncio.run(measure(args.turns, args.base))
    text = json.dumps(result, indent=2)
    print(text)
    (CACHE / f"tracecost-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
