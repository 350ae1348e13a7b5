"""What an idle open stream keeps in agentapi's memory (target 8), by allocation site.

    python -m bench.memtrace --db mariadb --streams 200 [--bridge] [--ref HEAD]

Starts the bench upstream and one ``agentapi serve`` with a ``sitecustomize``
(in a temp dir put first on its PYTHONPATH; nothing in server/ changes) that
starts ``tracemalloc`` and dumps a snapshot on SIGUSR1. After a warm-up, it
takes a snapshot, opens N streams that the upstream holds open (model
``hold``), takes another, and prints the RSS growth per stream, the Python
allocations' growth per stream, and the allocation sites that grew most
(bytes per stream). What RSS gained beyond the traced Python allocations is
native memory (grpc core, sockets' user-space buffers, sqlite, malloc arenas).
tracemalloc slows the server several times over: these figures are about
memory only.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import httpx

from bench import procs
from bench.loadgen import AgentapiProcess, Arm, BridgeArm, GrpcArm
from bench.run import CACHE, rerun_at_ref

SITECUSTOMIZE = """
import os
if os.environ.get("BENCH_TRACEMALLOC"):
    import itertools, signal, tracemalloc
    tracemalloc.start(int(os.environ.get("BENCH_TRACEMALLOC_FRAMES", "10")))
    _count = itertools.count()

    def _dump(signum, frame):
        path = os.path.join(os.environ["BENCH_TRACEMALLOC"], f"snapshot-{next(_count)}.bin")
        tracemalloc.take_snapshot().dump(path + ".tmp")
        os.replace(path + ".tmp", path)

    signal.signal(signal.SIGUSR1, _dump)
"""


async def snapshot(pid: int, folder: Path, index: int) -> tracemalloc.Snapshot:
    os.kill(pid, signal.SIGUSR1)
    path = folder / f"snapshot-{index}.bin"
    deadline = time.monotonic() + 120
    while not path.exists():
        if time.monotonic() > deadline:
            raise RuntimeError("no tracemalloc snapshot from the server")
        await asyncio.sleep(0.1)
    return tracemalloc.Snapshot.load(str(path))


async def main_async(args: argparse.Namespace) -> None:
    CACHE.mkdir(exist_ok=True)
    logs = Path(tempfile.mkdtemp(prefix="memtrace-", dir=CACHE))
    site = logs / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    upstream = procs.start_upstream(logs, 20.0, 64)
    mariadb = procs.MariaDB()
    db_url = f"sqlite+aiosqlite:///{logs / 'mem.db'}" if args.db == "sqlite" else mariadb.create("memtrace")
    saved = {k: os.environ.get(k) for k in ("PYTHONPATH", "BENCH_TRACEMALLOC")}
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(site), saved["PYTHONPATH"]) if p)
    os.environ["BENCH_TRACEMALLOC"] = str(logs)
    try:
        agentapi = procs.start_agentapi("memtrace", logs, db_url, f"http://127.0.0.1:{upstream.ports['http']}/v1", "k")
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    client = None
    try:
        procs.wait_http(agentapi, f"http://127.0.0.1:{agentapi.ports['http']}/healthz", timeout=180)
        client = AgentapiProcess("memtrace", agentapi.ports["grpc"], agentapi.ports["http"], procs.MASTER_KEY, 8)
        arm: Arm = (
            BridgeArm("D", "bridge", "agentapi", args.db, agentapi=client)
            if args.bridge
            else GrpcArm("C", "grpc", "agentapi", args.db, agentapi=client)
        )
        await arm.prepare("instant-64", 10)
        for _ in range(10):
            await arm.stream("instant-64")
        await arm.prepare("hold", args.streams)
        await asyncio.sleep(1)
        rss_before = procs.rss_bytes(agentapi.pid)
        before = await snapshot(agentapi.pid, logs, 0)
        tasks = [asyncio.create_task(arm.stream("hold")) for _ in range(args.streams)]
        async with httpx.AsyncClient() as control:
            stats_url = f"http://127.0.0.1:{upstream.ports['http']}/_stats"
            while (await control.get(stats_url)).json()["held_streams"] < args.streams:
                await asyncio.sleep(0.1)
            await asyncio.sleep(1)
            rss_open = procs.rss_bytes(agentapi.pid)
            after = await snapshot(agentapi.pid, logs, 1)
            await control.post(f"http://127.0.0.1:{upstream.ports['http']}/_release")
        await asyncio.gather(*tasks)
        n = args.streams
        traced = sum(s.size for s in after.statistics("filename")) - sum(s.size for s in before.statistics("filename"))
        print(f"{n} idle streams ({'bridge' if args.bridge else 'gRPC'}, {args.db}):")
        print(f"  RSS growth per stream:              {(rss_open - rss_before) / n / 1024:8.1f} KB")
        print(f"  traced Python allocations / stream: {traced / n / 1024:8.1f} KB")
        print(f"  native (RSS minus traced) / stream: {(rss_open - rss_before - traced) / n / 1024:8.1f} KB")
        filters = [tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, "<frozen *>")]
        after, before = after.filter_traces(filters), before.filter_traces(filters)
        print(f"  allocation sites that grew most (bytes per stream, key = {args.key}):")
        for stat in after.compare_to(before, args.key)[: args.top]:
            if stat.size_diff <= 0:
                break
            frames = stat.traceback.format(limit=args.frames, most_recent_first=True)
            where = " <- ".join(line.strip() for line in frames if not line.startswith("    "))
            print(f"    {stat.size_diff / n:9.0f} B  {stat.count_diff / n:6.1f} blocks  {where}")
    finally:
        if client is not None:
            await client.close()
        agentapi.stop(timeout=60)
        upstream.stop()
        mariadb.drop_all()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", choices=("sqlite", "mariadb"), default="sqlite")
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--bridge", action="store_true", help="open the streams through the JSON bridge")
    parser.add_argument("--key", choices=("lineno", "filename", "traceback"), default="lineno")
    parser.add_argument("--frames", type=int, default=1)
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--ref", help="measure this commit (a snapshot) instead of the working tree")
    args = parser.parse_args()
    if args.ref:
        return rerun_at_ref(args.ref, "bench.memtrace")
    asyncio.run(main_async(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
