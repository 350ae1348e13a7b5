"""Database commands per streamed turn through the whole gRPC server (the event
log's flusher and checkpoints included), on MariaDB.

    python -m bench.dbwrites [--turns 30] [--concurrency 1] [--model paced-64] [--ref COMMIT]

Starts this checkout's server (``server.app.start_grpc``, or ``--ref``'s) in
this process against the bench upstream, runs streamed turns over gRPC, and
counts every MariaDB command the process sends (aiomysql round trips, by first
word) while they run; the same wall time with no turn is measured first, so
heartbeats and readiness checks are subtracted. ``paced-64`` streams 64 deltas
20 ms apart (~1.3 s: several event-log flushes); ``instant-64`` sends them at
once (one flush).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import tempfile
import time
from pathlib import Path

from bench import procs
from bench.run import CACHE, rerun_at_ref
from bench.turncost import count_round_trips


async def main_async(args: argparse.Namespace) -> None:
    import grpc

    from agentapi import v1 as pb
    from server.app import start_grpc
    from server.config import Config
    from server.store.migrate import upgrade

    CACHE.mkdir(exist_ok=True)
    logs = Path(tempfile.mkdtemp(prefix="dbwrites-", dir=CACHE))
    upstream = procs.start_upstream(logs, 20.0, 64)
    mariadb = procs.MariaDB()
    db_url = mariadb.create("dbwrites")
    key = "sk-bench-dbwrites"
    try:
        await asyncio.to_thread(upgrade, db_url)
        config = Config(
            database_url=db_url,
            llm_base_url=f"http://127.0.0.1:{upstream.ports['http']}/v1",
            llm_api_key="unused",
            master_key=key,
            grpc_addr="127.0.0.1:0",
            http_addr="127.0.0.1:0",
        )
        server = await start_grpc(config)
        auth = (("authorization", f"Bearer {key}"),)
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
        sessions = pb.SessionServiceStub(channel)
        ids = []
        for _ in range(args.turns):
            request = pb.CreateSessionRequest(session=pb.Session(overrides=pb.SessionSettings(model=args.model)))
            ids.append((await sessions.CreateSession(request, metadata=auth)).session.id)

        async def turn(session_id: str) -> None:
            message = pb.InputMessage(role=pb.ROLE_USER, content="Write sixty-four words about benchmarks.")
            request = pb.SendStreamingMessageRequest(session_id=session_id, messages=[message])
            async for _ in sessions.SendStreamingMessage(request, metadata=auth):
                pass

        await turn(ids.pop())  # warm: connections, caches
        trips: collections.Counter[str] = collections.Counter()
        count_round_trips(trips)
        await asyncio.sleep(1.0)  # let the warm turn's log flush
        trips.clear()
        started = time.perf_counter()
        semaphore = asyncio.Semaphore(args.concurrency)

        async def bounded(session_id: str) -> None:
            async with semaphore:
                await turn(session_id)

        await asyncio.gather(*(bounded(s) for s in ids))
        await asyncio.sleep(1.0)  # the last flush
        busy = dict(trips)
        wall = time.perf_counter() - started
        trips.clear()
        await asyncio.sleep(wall)  # the same time idle: heartbeats, readiness, recovery sweeps
        idle = dict(trips)
        n = len(ids)
        print(f"{n} streamed turns of {args.model}, concurrency {args.concurrency}, MariaDB, {wall:.1f} s")
        print("MariaDB commands per turn (idle background subtracted):")
        total = 0.0
        for kind in sorted(set(busy) | set(idle)):
            per_turn = (busy.get(kind, 0) - idle.get(kind, 0)) / n
            total += per_turn
            print(f"  {kind:10} {per_turn:6.2f}")
        print(f"  {'total':10} {total:6.2f}")
        await channel.close()
        await server.stop(1.0)
    finally:
        upstream.stop()
        mariadb.drop_all()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--turns", type=int, default=30)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--model", default="paced-64", help="paced-N, instant-N (see bench/upstream.py)")
    parser.add_argument("--ref", help="measure this commit (a snapshot) instead of the working tree")
    args = parser.parse_args()
    if args.ref:
        return rerun_at_ref(args.ref, "bench.dbwrites")
    asyncio.run(main_async(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
