"""Profile one agentapi arm under a chosen load (phase 2 of issue 7).

    python -m bench.profile --db sqlite --workload unary --concurrency 8 --seconds 15
    python -m bench.profile --db mariadb --workload ttft --seconds 15 --ref HEAD

Starts the bench upstream and one ``agentapi serve`` (gRPC + bridge), drives
it with the bench's load generator, and samples the agentapi process with
py-spy (``pip install py-spy`` into .venv; not a declared dependency). Writes
the collapsed stacks to bench/.cache/profile-<time>.txt and prints the
functions with the most samples, by own time and by inclusive time.

Workloads: ``ttft`` one streamed turn at a time (the 1-stream TTFT phase);
``stream`` N concurrent 64-delta streams (closed loop); ``unary`` N concurrent
non-streamed turns; ``bridge-ttft`` / ``bridge-unary`` the same through the JSON bridge.
``--via litellm`` puts the LiteLLM proxy between agentapi and the upstream (arm C').
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench import procs
from bench.loadgen import AgentapiProcess, Arm, BridgeArm, GrpcArm, closed_loop
from bench.run import CACHE, HOME, rerun_at_ref, stats_ms

# Sample buckets, first match wins (checked against every frame of a sample).
BUCKETS = (
    ("database (SQLAlchemy, aiosqlite, aiomysql)", ("sqlalchemy/", "aiosqlite/", "aiomysql/", "pymysql/")),
    ("upstream HTTP client (httpx, httpcore, h11, SSE)", ("httpx/", "httpcore/", "h11/", "httpx_sse/", "anyio/")),
    ("JSON bridge (starlette, uvicorn, sse_starlette)", ("starlette/", "uvicorn/", "sse_starlette/", "gateway/")),
    ("protobuf conversion (server/api/convert.py)", ("server/api/convert.py", "protobuf/")),
    ("logging", ("logging/",)),
    ("grpc (Python layer)", ("grpc/",)),
    ("agentapi code", ("server/api/", "server/domain/", "server/llm/", "server/store/", "server/app.py")),
    ("asyncio loop and C callbacks (grpc core, sockets)", ("asyncio/",)),
)


def bucket_of(frames: list[str]) -> str:
    for name, needles in BUCKETS:
        if any(needle in frame for frame in frames for needle in needles):
            return name
    return "other (threads without Python frames, interpreter)"


def summarize_stacks(path: Path, top: int) -> str:
    own: collections.Counter[str] = collections.Counter()
    buckets: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = stack.split(";")
        own[frames[-1]] += count
        buckets[bucket_of(frames)] += count
        for frame in set(frames):
            inclusive[frame] += count
    lines = [f"{total} samples", "", "by component (first match: database, HTTP client, bridge, ...):"]
    lines += [f"  {n / total:6.1%}  {b}" for b, n in buckets.most_common()]
    lines += ["", "own time:"]
    lines += [f"  {n / total:6.1%}  {f}" for f, n in own.most_common(top)]
    lines += ["", "inclusive time:"]
    lines += [f"  {n / total:6.1%}  {f}" for f, n in inclusive.most_common(top)]
    return "\n".join(lines)


def print_cprofile(path: Path, top: int, turns: int) -> None:
    """The functions with the most own and cumulative time, with calls per measured turn."""
    import pstats

    if not path.exists():
        print(f"no cProfile output at {path}")
        return
    stats = pstats.Stats(str(path))
    entries = stats.stats  # type: ignore[attr-defined]
    rows = []
    for (file, line, name), (_cc, ncalls, tottime, cumtime, _callers) in entries.items():
        short = f"{Path(file).parent.name}/{Path(file).name}:{line}({name})" if line else name
        rows.append((tottime, cumtime, ncalls, short))
    total = sum(r[0] for r in rows)
    print(f"cProfile (main thread only; all turns incl. warm-up): {total:.2f} s own time in total")
    print("own time:")
    for tottime, _, ncalls, name in sorted(rows, reverse=True)[:top]:
        print(f"  {tottime / total:6.1%}  {ncalls / max(1, turns):8.1f}/turn  {name}")
    print("cumulative:")
    for _, cumtime, ncalls, name in sorted(rows, key=lambda r: -r[1])[:top]:
        print(f"  {cumtime:8.2f}s  {ncalls / max(1, turns):8.1f}/turn  {name}")
    print(f"profile: {path}")


def thread_times(pid: int) -> dict[int, tuple[str, float, float]]:
    """CPU seconds of each thread of ``pid``, by thread id, with the thread's name (kernel comm)."""
    import psutil

    out = {}
    for thread in psutil.Process(pid).threads():
        try:
            name = Path(f"/proc/{pid}/task/{thread.id}/comm").read_text().strip()
        except OSError:
            name = "?"
        out[thread.id] = (name if thread.id != pid else f"{name} (main)", thread.user_time, thread.system_time)
    return out


def model_of(workload: str, deltas: int) -> str:
    if workload.endswith("ttft"):
        return "paced-1"
    return f"instant-{deltas}" if workload.endswith("unary") else f"paced-{deltas}"


async def drive(arm: Arm, workload: str, concurrency: int, seconds: float, deltas: int) -> dict[str, object]:
    """Runs the workload; sessions must have been prepared (so none is created while sampling)."""
    model = model_of(workload, deltas)
    if workload.endswith("ttft"):
        turns = []
        stop = time.perf_counter() + seconds
        while time.perf_counter() < stop:
            turns.append(await arm.stream(model))
            await asyncio.sleep(0.005)
        return {"turns": len(turns), "ttft_ms": stats_ms([t.ttft for t in turns if t.ttft is not None])}
    if workload.endswith("unary"):
        window = await closed_loop(lambda: arm.unary(model), concurrency, 0.5, seconds)
    else:
        window = await closed_loop(lambda: arm.stream(model), concurrency, 1.3, seconds)
    counted = window.counted
    return {
        "turns": len(counted),
        "turns_per_s": round(window.completed_in_window / seconds, 1),
        "errors": sum(1 for t in counted if t.error),
        "e2e_ms": stats_ms([t.e2e for t in counted if t.e2e is not None]),
        "ttft_ms": stats_ms([t.ttft for t in counted if t.ttft is not None]),
        "itl_ms": stats_ms([g for t in counted for g in t.gaps]),
    }


async def main_async(args: argparse.Namespace) -> None:
    CACHE.mkdir(exist_ok=True)
    logs = Path(tempfile.mkdtemp(prefix="profile-", dir=CACHE))
    upstream = procs.start_upstream(logs, 20.0, args.deltas)
    mariadb = procs.MariaDB()
    if args.db == "sqlite":
        db_url = f"sqlite+aiosqlite:///{logs / 'profile.db'}"
    else:
        db_url = mariadb.create("profile")
    stamp = time.strftime("%Y%m%dT%H%M%S")
    cprofile_out = CACHE / f"profile-{stamp}-{args.db}-{args.workload}.prof"
    wrapper = ["-m", "bench.cprof", str(cprofile_out)] if args.profiler == "cprofile" else None
    llm_url, llm_key = f"http://127.0.0.1:{upstream.ports['http']}/v1", "k"
    litellm = None
    if args.via == "litellm":
        from tests.support.litellm_proxy import LiteLLMProxy

        litellm = LiteLLMProxy(llm_url, master_key="sk-bench-litellm", venv=HOME / ".venv-litellm")
        litellm.start(timeout=120)
        llm_url, llm_key = f"{litellm.base_url}/v1", litellm.master_key
    agentapi = procs.start_agentapi("profile", logs, db_url, llm_url, llm_key, wrapper)
    client = None
    turns = 0
    try:
        procs.wait_http(agentapi, f"http://127.0.0.1:{agentapi.ports['http']}/healthz")
        client = AgentapiProcess("profile", agentapi.ports["grpc"], agentapi.ports["http"], procs.MASTER_KEY, 8)
        arm: Arm
        if args.workload.startswith("bridge"):
            arm = BridgeArm("D", "bridge", "agentapi", args.db, agentapi=client)
        else:
            arm = GrpcArm("C", "grpc", "agentapi", args.db, agentapi=client)
        model = model_of(args.workload, args.deltas)
        per_second = 60 if args.workload.endswith("ttft") else 150 * max(1, args.concurrency // 4)
        if args.workload.endswith("stream"):
            per_second = args.concurrency
        await arm.prepare(model, int(per_second * (args.seconds + 4)))
        await drive(arm, args.workload, args.concurrency, 2.0, args.deltas)  # warm-up
        async with httpx.AsyncClient() as control:
            before = (await control.get(f"http://127.0.0.1:{upstream.ports['http']}/_stats")).json()
        out = CACHE / f"profile-{stamp}-{args.db}-{args.workload}.txt"
        spy = None
        pyspy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        if args.profiler == "pyspy":
            cmd = [pyspy, "record", "-p", str(agentapi.pid), "-d", str(int(args.seconds) + 1), "-r", str(args.rate),
                   "-f", "raw", "-o", str(out)]  # fmt: skip
            if not args.native:
                cmd.append("--nonblocking")
            if args.idle:
                cmd.append("--idle")
            if args.gil:
                cmd.append("--gil")
            if args.threads:
                cmd.append("--threads")
            if args.native:
                cmd.append("--native")
            spy = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            await asyncio.sleep(0.5)
        cpu_before = procs.cpu_seconds(agentapi.pid)
        threads_before = thread_times(agentapi.pid)
        started = time.perf_counter()
        result = await drive(arm, args.workload, args.concurrency, args.seconds, args.deltas)
        wall = time.perf_counter() - started
        cpu = procs.cpu_seconds(agentapi.pid) - cpu_before
        threads_after = thread_times(agentapi.pid)
        async with httpx.AsyncClient() as control:
            after = (await control.get(f"http://127.0.0.1:{upstream.ports['http']}/_stats")).json()
        result["upstream_requests"] = after["requests"] - before["requests"]
        result["upstream_connections_opened"] = after["connections"] - before["connections"]
        result["sessions_created_while_measuring"] = sum(p.created_late for p in client.pools.values())
        result["agentapi_cores"] = round(cpu / wall, 3)
        result["agentapi_cpu_ms_per_turn"] = round(cpu / max(1, int(result["turns"])) * 1000, 3)  # type: ignore[call-overload]
        print(result)
        print(f"agentapi threads, CPU ms per turn, user + system ({len(threads_after)} threads):")
        user: collections.Counter[str] = collections.Counter()
        system: collections.Counter[str] = collections.Counter()
        for tid, (name, u, s) in threads_after.items():
            _, u0, s0 = threads_before.get(tid, (name, 0.0, 0.0))
            user[name] += u - u0
            system[name] += s - s0
        count = max(1, int(result["turns"]))  # type: ignore[call-overload]
        for name in sorted(user, key=lambda n: -(user[n] + system[n]))[:6]:
            print(f"  {user[name] / count * 1000:8.3f} + {system[name] / count * 1000:8.3f}  {name}")
        turns = int(result["turns"])  # type: ignore[call-overload]
        if spy is not None:
            _, err = await asyncio.to_thread(spy.communicate)
            if out.exists():
                print(summarize_stacks(out, args.top))
                print(f"stacks: {out}")
            else:
                print(f"py-spy failed: {err.decode()[-500:]}")
    finally:
        if client is not None:
            await client.close()
        agentapi.stop(timeout=60)
        if litellm is not None:
            litellm.stop()
        upstream.stop()
        mariadb.drop_all()
    if args.profiler == "cprofile":
        print_cprofile(cprofile_out, args.top, turns)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", choices=("sqlite", "mariadb"), default="sqlite")
    parser.add_argument(
        "--workload",
        choices=("ttft", "stream", "unary", "bridge-ttft", "bridge-stream", "bridge-unary"),
        default="ttft",
    )
    parser.add_argument("--via", choices=("direct", "litellm"), default="direct", help="agentapi's upstream")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--deltas", type=int, default=64)
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("--idle", action="store_true", help="also sample idle (waiting) stacks")
    parser.add_argument("--gil", action="store_true", help="only sample the thread holding the GIL")
    parser.add_argument("--threads", action="store_true", help="name threads in the stacks")
    parser.add_argument("--native", action="store_true", help="include C frames (grpc's Cython core, ...)")
    parser.add_argument("--profiler", choices=("pyspy", "cprofile", "none"), default="pyspy")
    parser.add_argument("--top", type=int, default=45)
    parser.add_argument("--ref", help="profile this commit (a snapshot) instead of the working tree")
    args = parser.parse_args()
    if args.ref:
        return rerun_at_ref(args.ref, "bench.profile")
    asyncio.run(main_async(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
