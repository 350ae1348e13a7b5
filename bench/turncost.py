"""Where one turn's CPU goes, without gRPC: agentapi's own TurnRunner, in this
process, against the bench upstream (another process) and a real database.

    python -m bench.turncost --db mariadb --turns 300 [--ref 998fbeb] [--what-if reuse]

Runs turns one at a time (nothing else runs in the process, so the main
thread's CPU clock between two events is that stage's CPU) and reports, per
turn, the CPU of:
  store inputs   validation, session + history + tenant reads, the INSERTs and COMMIT
  first delta    opening the upstream request and reading its first delta
  rest of stream the remaining deltas
  store reply    cost, the terminal UPDATE and COMMIT
and, across all stages, the CPU inside SQLAlchemy's ``AsyncSession`` calls by
statement kind, and how many TCP connections the upstream saw per turn.

``--what-if reuse`` patches, in this process only, agentapi's upstream stream
reader to read the response to its end after ``[DONE]`` (so httpx can return
the connection to its pool), to measure what that change would save. Nothing
in server/ is modified. The constructor calls follow server/app.py of the
measured commit (pass ``--ref`` for another one).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench import procs
from bench.run import CACHE, rerun_at_ref, stats_ms

clock = time.thread_time


def gc_stats() -> list[dict[str, int]]:
    import gc

    return gc.get_stats()


def patch_sqlalchemy(totals: collections.Counter[str], counts: collections.Counter[str]) -> None:
    """Accumulates main-thread CPU inside AsyncSession's database calls, by kind."""
    from sqlalchemy.ext.asyncio import AsyncSession

    def wrap(name: str) -> None:
        original = getattr(AsyncSession, name)

        async def timed(self: Any, *args: Any, **kwargs: Any) -> Any:
            kind = name
            if name == "execute" and args:
                kind = f"execute {type(args[0]).__name__}"
            started = clock()
            try:
                return await original(self, *args, **kwargs)
            finally:
                totals[kind] += clock() - started
                counts[kind] += 1

        setattr(AsyncSession, name, timed)

    for name in ("execute", "get", "commit", "scalar", "scalars"):
        if hasattr(AsyncSession, name):
            wrap(name)


def count_round_trips(trips: collections.Counter[str]) -> None:
    """Counts the commands the turn sends MariaDB, by kind (each one round
    trip): queries by their first word (COMMIT and ROLLBACK included, resets on
    return too), and pings. Wraps aiomysql's ``Connection._execute_command``."""
    try:
        from aiomysql import connection
    except ImportError:
        return
    from pymysql.constants import COMMAND

    original = connection.Connection._execute_command

    async def counted(self: Any, command: int, sql: Any) -> Any:
        if command == COMMAND.COM_QUERY:
            text = bytes(sql).decode(errors="replace") if isinstance(sql, (bytes, bytearray)) else str(sql)
            trips[text.split(None, 1)[0].upper() if text.strip() else "?"] += 1
        else:
            trips["PING" if command == COMMAND.COM_PING else f"command {command}"] += 1
        return await original(self, command, sql)

    connection.Connection._execute_command = counted


def patch_core_update() -> None:
    """What if the terminal UPDATE were one prebuilt Core statement with bound parameters (no ORM-enabled
    UPDATE, no session synchronisation, one cached compilation)? Replaces ``runs.terminal.store_reply`` in
    this process only."""
    from sqlalchemy import bindparam

    from server.domain.runs import terminal
    from server.store.models import MessageRow

    table = MessageRow.__table__
    statement = (
        table.update()
        .where(table.c.id == bindparam("_id"))
        .values({name: bindparam(f"v_{name}") for name in terminal.TERMINAL_COLUMNS})
    )

    async def store_reply(database: Any, reply: Any) -> None:
        params = {f"v_{name}": getattr(reply, name) for name in terminal.TERMINAL_COLUMNS}
        async with database.session() as db:
            await (await db.connection()).execute(statement, {"_id": reply.id, **params})
            await db.commit()

    terminal.store_reply = store_reply


def patch_reuse() -> None:
    """What if agentapi kept reading after ``[DONE]`` to the end of the response
    (so httpx can return the connection to its pool)? Recompiles, in this
    process only, ``_Stream.__aiter__`` of the measured commit with its
    ``break`` after ``[DONE]`` turned into ``continue``."""
    import inspect
    import re
    import textwrap

    from server.llm import openai_compat

    source = textwrap.dedent(inspect.getsource(openai_compat._Stream.__aiter__))
    patched = re.sub(r"(done = True\n\s*)break", r"\1continue", source)
    if patched == source:
        raise SystemExit("--what-if reuse: this commit's _Stream.__aiter__ has no 'done = True; break' to change")
    namespace: dict[str, Any] = {}
    exec(compile(patched, "<what-if reuse>", "exec"), vars(openai_compat), namespace)
    openai_compat._Stream.__aiter__ = namespace["__aiter__"]


async def main_async(args: argparse.Namespace) -> None:
    from server.app import make_backend
    from server.config import Config
    from server.domain.catalog import Catalog
    from server.domain.common import Principal
    from server.domain.quota import QuotaGuard, make_storage
    from server.domain.runs import InputMessage, TurnOptions, TurnRunner
    from server.domain.sessions import SessionService, Settings
    from server.store.db import Database
    from server.store.migrate import upgrade

    CACHE.mkdir(exist_ok=True)
    logs = Path(tempfile.mkdtemp(prefix="turncost-", dir=CACHE))
    upstream = procs.start_upstream(logs, 20.0, 64)
    mariadb = procs.MariaDB()
    db_url = f"sqlite+aiosqlite:///{logs / 'turncost.db'}" if args.db == "sqlite" else mariadb.create("turncost")
    try:
        await asyncio.to_thread(upgrade, db_url)
        config = Config(database_url=db_url, llm_base_url=f"http://127.0.0.1:{upstream.ports['http']}/v1")
        db = Database(db_url)
        backend = make_backend(config)
        runner = TurnRunner(db, backend, Catalog(backend), QuotaGuard(make_storage(None)), runner_id="turncost")
        sessions = SessionService(db, None)  # type: ignore[arg-type]
        principal = Principal("default", admin=True)
        if "reuse" in args.what_if:
            patch_reuse()
        if "core-update" in args.what_if:
            patch_core_update()
        totals: collections.Counter[str] = collections.Counter()
        counts: collections.Counter[str] = collections.Counter()
        stage_cpu: dict[str, list[float]] = collections.defaultdict(list)
        model = args.model
        session_ids = []
        for _ in range(args.turns // 8 + 2):
            view = await sessions.create(principal, "", "", Settings(model=model), {})
            session_ids.append(view.row.id)

        walls: dict[str, float] = {}
        ttft_wall: list[float] = []

        async def turn(session_id: str) -> list[tuple[str, float]]:
            """One turn; CPU clock marks at the first input event, the first delta and the final event."""
            marks = [("start", clock())]
            walls["start"] = time.perf_counter()
            inputs = [InputMessage(role="user", content="Write sixty-four words about benchmarks.")]
            last_delta = None
            async for event in runner.run(principal, session_id, inputs, TurnOptions()):
                now = clock()
                if event.kind == "input":
                    marks.append(("store inputs", now))
                elif event.kind == "delta":
                    if last_delta is None:
                        marks.append(("first delta", now))
                        walls["first delta"] = time.perf_counter()
                    last_delta = now
                elif event.kind == "final":
                    if last_delta is not None:
                        marks.append(("rest of stream", last_delta))
                    marks.append(("store reply", now))
            return marks

        for index in range(args.warm):
            await turn(session_ids[index // 8])
        if "gc" in args.what_if:
            import gc

            gc.collect()
            gc.freeze()  # what a server could do once after startup: long-lived objects leave the GC's scans
            gc.set_threshold(*args.gc_threshold)
        gc_before = gc_stats()
        async with httpx.AsyncClient() as control:
            before = (await control.get(f"http://127.0.0.1:{upstream.ports['http']}/_stats")).json()
        patch_sqlalchemy(totals, counts)
        trips: collections.Counter[str] = collections.Counter()
        count_round_trips(trips)
        started_cpu, started_wall = clock(), time.perf_counter()
        for index in range(args.turns):
            marks = await turn(session_ids[(index + args.warm) // 8 % len(session_ids)])
            if "first delta" in walls:
                ttft_wall.append(walls.pop("first delta") - walls["start"])
            for (_, t0), (name, t1) in zip(marks, marks[1:], strict=False):
                stage_cpu[name].append(t1 - t0)
        cpu = clock() - started_cpu
        wall = time.perf_counter() - started_wall
        async with httpx.AsyncClient() as control:
            after = (await control.get(f"http://127.0.0.1:{upstream.ports['http']}/_stats")).json()
        n = args.turns
        gc_after = gc_stats()
        what_if = "+".join(args.what_if) or "none"
        print(f"{n} turns of {model} on {args.db}, what-if: {what_if}; main-thread CPU per turn, ms:")
        print(f"  total          {cpu / n * 1000:7.3f}   (wall {wall / n * 1000:.2f} ms per turn)")
        for name, values in stage_cpu.items():
            s = stats_ms(values)
            print(f"  {name:14} {s['mean']:7.3f}   p50 {s['p50']:.3f}  p99 {s['p99']:.3f}")
        if ttft_wall:
            s = stats_ms(ttft_wall)
            print(f"  wall time from run() to the first delta: p50 {s['p50']:.3f}  p99 {s['p99']:.3f} ms")
        print("  inside AsyncSession calls (main thread), by kind:")
        for kind, total in totals.most_common():
            print(f"    {kind:28} {total / n * 1000:7.3f} ms/turn  ({counts[kind] / n:.1f} calls/turn)")
        sent = ", ".join(f"{kind} {count / n:.2f}" for kind, count in sorted(trips.items()))
        print(f"  MariaDB commands (round trips) per turn: {sent}")
        print(f"  upstream connections opened per turn: {(after['connections'] - before['connections']) / n:.2f}")
        collections_run = [a["collections"] - b["collections"] for a, b in zip(gc_after, gc_before, strict=True)]
        print(f"  garbage collections per turn by generation: {[round(c / n, 2) for c in collections_run]}")
        await backend.aclose()
        await db.dispose()
    finally:
        upstream.stop()
        mariadb.drop_all()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", choices=("sqlite", "mariadb"), default="sqlite")
    parser.add_argument("--turns", type=int, default=300)
    parser.add_argument("--warm", type=int, default=20)
    parser.add_argument("--model", default="instant-64", help="paced-N, instant-N (see bench/upstream.py)")
    parser.add_argument(
        "--what-if",
        action="append",
        default=[],
        choices=("reuse", "gc", "core-update"),
        help="patch this process to measure a proposed change: reuse (upstream keep-alive), gc (gc.freeze()"
        " after warm-up and --gc-threshold), core-update (the terminal UPDATE as one prebuilt Core statement)",
    )
    parser.add_argument("--gc-threshold", type=int, nargs=3, default=(700, 10, 10))
    parser.add_argument("--ref", help="measure this commit (a snapshot) instead of the working tree")
    args = parser.parse_args()
    if args.ref:
        return rerun_at_ref(args.ref, "bench.turncost")
    asyncio.run(main_async(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
