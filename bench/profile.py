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

from bench import procs
from bench.loadgen import AgentapiProcess, Arm, BridgeArm, GrpcArm, closed_loop
from bench.run import CACHE, run_snapshot, stats_ms


def summarize_stacks(path: Path, top: int) -> str:
    own: collections.Counter[str] = collections.Counter()
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
        for frame in set(frames):
            inclusive[frame] += count
    lines = [f"{total} samples", "", "own time:"]
    lines += [f"  {n / total:6.1%}  {f}" for f, n in own.most_common(top)]
    lines += ["", "inclusive time:"]
    lines += [f"  {n / total:6.1%}  {f}" for f, n in inclusive.most_common(top)]
    return "\n".join(lines)


async def drive(arm: Arm, workload: str, concurrency: int, seconds: float, deltas: int) -> dict[str, object]:
    if workload.endswith("ttft"):
        model = "paced-2"
        await arm.prepare(model, int(seconds * 40))
        turns = []
        stop = time.perf_counter() + seconds
        while time.perf_counter() < stop:
            turns.append(await arm.stream(model))
            await asyncio.sleep(0.005)
        return {"turns": len(turns), "ttft_ms": stats_ms([t.ttft for t in turns if t.ttft is not None])}
    if workload.endswith("unary"):
        model = f"instant-{deltas}"
        await arm.prepare(model, int(seconds * 300))
        window = await closed_loop(lambda: arm.unary(model), concurrency, 0.5, seconds)
    else:
        model = f"paced-{deltas}"
        await arm.prepare(model, int(concurrency * (seconds + 3) / 1.2))
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
    agentapi = procs.start_agentapi("profile", logs, db_url, f"http://127.0.0.1:{upstream.ports['http']}/v1", "k")
    client = None
    try:
        procs.wait_http(agentapi, f"http://127.0.0.1:{agentapi.ports['http']}/healthz")
        client = AgentapiProcess("profile", agentapi.ports["grpc"], agentapi.ports["http"], procs.MASTER_KEY, 8)
        arm: Arm
        if args.workload.startswith("bridge"):
            arm = BridgeArm("D", "bridge", "agentapi", args.db, agentapi=client)
        else:
            arm = GrpcArm("C", "grpc", "agentapi", args.db, agentapi=client)
        await drive(arm, args.workload, args.concurrency, 2.0, args.deltas)  # warm-up
        out = CACHE / f"profile-{time.strftime('%Y%m%dT%H%M%S')}-{args.db}-{args.workload}.txt"
        spy = None
        pyspy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        if not args.no_profile:
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
        started = time.perf_counter()
        result = await drive(arm, args.workload, args.concurrency, args.seconds, args.deltas)
        wall = time.perf_counter() - started
        cpu = procs.cpu_seconds(agentapi.pid) - cpu_before
        result["agentapi_cores"] = round(cpu / wall, 3)
        result["agentapi_cpu_ms_per_turn"] = round(cpu / max(1, int(result["turns"])) * 1000, 3)  # type: ignore[call-overload]
        print(result)
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
        agentapi.stop()
        upstream.stop()
        mariadb.drop_all()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", choices=("sqlite", "mariadb"), default="sqlite")
    parser.add_argument(
        "--workload",
        choices=("ttft", "stream", "unary", "bridge-ttft", "bridge-stream", "bridge-unary"),
        default="ttft",
    )
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--deltas", type=int, default=64)
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("--idle", action="store_true", help="also sample idle (waiting) stacks")
    parser.add_argument("--gil", action="store_true", help="only sample the thread holding the GIL")
    parser.add_argument("--threads", action="store_true", help="name threads in the stacks")
    parser.add_argument("--native", action="store_true", help="include C frames (grpc's Cython core, ...)")
    parser.add_argument("--no-profile", action="store_true")
    parser.add_argument("--top", type=int, default=45)
    parser.add_argument("--ref", help="profile this commit (a snapshot) instead of the working tree")
    args = parser.parse_args()
    if args.ref:
        argv = [a for a in sys.argv[1:]]
        index = argv.index("--ref") if "--ref" in argv else -1
        if index >= 0:
            del argv[index : index + 2]
        else:
            argv = [a for a in argv if not a.startswith("--ref=")]
        return run_snapshot(args.ref, argv, module="bench.profile")
    asyncio.run(main_async(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
