"""What a server-side step costs: agentapi's own TurnRunner, in this process,
against the bench upstream (another process) and a real database.

    python -m bench.steps --db mariadb --runs 200

Two arms, interleaved run by run so the machine's drift hits both alike:
``one step``, a plain turn streaming 64 deltas (model ``instant-64``), and
``two steps``, an agent with the built-in ``echo`` tool whose model first
calls it (model ``tool-64``: a tool call, the server runs ``echo``, stores the
tool message and the next reply, then 64 deltas). Reports main-thread CPU and
wall time per run, and the added cost of the second step as a ratio to a
one-step turn. ``make bench`` runs it as its ``steps`` phase.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import procs
from bench.run import CACHE, stats_ms

clock = time.thread_time


async def measure(db_kind: str, runs: int, warm: int = 10) -> dict[str, Any]:
    """Per-run CPU and wall time of each arm, and the two-step to one-step ratios."""
    from server.app import make_backend
    from server.config import Config
    from server.domain.agents import AgentFields, AgentService
    from server.domain.catalog import Catalog
    from server.domain.common import Principal
    from server.domain.quota import QuotaGuard, make_storage
    from server.domain.runs import InputMessage, TurnOptions, TurnRunner
    from server.domain.sessions import SessionService, Settings
    from server.store.db import Database
    from server.store.migrate import upgrade

    CACHE.mkdir(exist_ok=True)
    logs = Path(tempfile.mkdtemp(prefix="steps-", dir=CACHE))
    upstream = procs.start_upstream(logs, 20.0, 64)
    mariadb = procs.MariaDB()
    url = f"sqlite+aiosqlite:///{logs / 'steps.db'}" if db_kind == "sqlite" else mariadb.create("steps")
    try:
        await asyncio.to_thread(upgrade, url)
        config = Config(database_url=url, llm_base_url=f"http://127.0.0.1:{upstream.ports['http']}/v1")
        db = Database(url)
        backend = make_backend(config)
        runner = TurnRunner(db, backend, Catalog(backend), QuotaGuard(make_storage(None)), runner_id="bench-steps")
        principal = Principal("default", admin=True)
        sessions = SessionService(db, None)  # type: ignore[arg-type]
        agent = await AgentService(db, None).create(  # type: ignore[arg-type]
            principal, AgentFields(key=f"steps-{int(time.time())}", default_model="tool-64", builtin_tools=["echo"])
        )
        arms = {"one step": ("", "instant-64"), "two steps": (agent.id, "")}
        pools: dict[str, list[str]] = {name: [] for name in arms}
        for name, (agent_id, model) in arms.items():
            for _ in range((runs + warm) // 8 + 2):
                view = await sessions.create(principal, agent_id, "", Settings(model=model), {})
                pools[name].append(view.row.id)
        cpu: dict[str, list[float]] = {name: [] for name in arms}
        wall: dict[str, list[float]] = {name: [] for name in arms}
        steps_seen: dict[str, int] = {}

        async def one_run(name: str, index: int) -> None:
            inputs = [InputMessage(role="user", content="Write sixty-four words about benchmarks.")]
            started_cpu, started_wall = clock(), time.perf_counter()
            final = None
            async for event in runner.run(principal, pools[name][index // 8], inputs, TurnOptions()):
                if event.kind == "final":
                    final = event.message
            if index >= warm:
                cpu[name].append(clock() - started_cpu)
                wall[name].append(time.perf_counter() - started_wall)
            assert final is not None and final.status == "completed", (name, final and final.error)
            steps_seen[name] = final.step

        for index in range(runs + warm):
            for name in arms:
                await one_run(name, index)
        summary = {name: {"cpu_ms": stats_ms(cpu[name]), "wall_ms": stats_ms(wall[name])} for name in arms}
        one, two = summary["one step"], summary["two steps"]
        result = {
            "db": db_kind,
            "runs": runs,
            "steps": steps_seen,
            "arms": summary,
            "cpu_ratio_two_to_one": round(two["cpu_ms"]["mean"] / one["cpu_ms"]["mean"], 3),
            "added_step_cpu_ms": round(two["cpu_ms"]["mean"] - one["cpu_ms"]["mean"], 3),
            "wall_ratio_two_to_one_p50": round(two["wall_ms"]["p50"] / one["wall_ms"]["p50"], 3),
        }
        await backend.aclose()
        await db.dispose()
        return result
    finally:
        upstream.stop()
        mariadb.drop_all()


def describe(result: dict[str, Any]) -> str:
    """One line for the bench log."""
    one, two = result["arms"]["one step"], result["arms"]["two steps"]
    return (
        f"steps ({result['db']}, {result['runs']} runs each): one step {one['cpu_ms']['mean']:.2f} ms CPU, "
        f"two steps {two['cpu_ms']['mean']:.2f} ms CPU ({result['cpu_ratio_two_to_one']:.2f}x, "
        f"+{result['added_step_cpu_ms']:.2f} ms per server-side step); wall p50 {one['wall_ms']['p50']:.1f} vs "
        f"{two['wall_ms']['p50']:.1f} ms ({result['wall_ratio_two_to_one_p50']:.2f}x)"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", choices=("sqlite", "mariadb"), default="mariadb")
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()
    print(describe(asyncio.run(measure(args.db, args.runs))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
