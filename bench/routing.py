"""The added time to first token of each routing mode against passthrough:
agentapi's own TurnRunner, in this process, against the bench upstream
(another process; model ``late-16``: its first token comes one pace, 20 ms,
after the request, as a real model's takes time) and a real database.

    python -m bench.routing --db mariadb --turns 40

The modes run turn by turn in rotation, so the machine's drift hits them
alike. For each: time from ``run()`` to the first event the caller can show
(any delta, reasoning included) and to the first answer delta (content).
``reasoning`` adds one planning call before the answer; ``auto`` adds one
classifier call (the bench upstream answers it with neither word, so auto
falls back to passthrough: the figure is the classifier's cost alone).
``make bench`` runs it as its ``routing`` phase.
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

MODES = ("passthrough", "reasoning", "auto")


async def measure(db_kind: str, turns: int, warm: int = 4) -> dict[str, Any]:
    """Per mode: p50/p99 of the time to the first delta and to the first
    answer, and the added p50 against passthrough."""
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
    logs = Path(tempfile.mkdtemp(prefix="routing-", dir=CACHE))
    upstream = procs.start_upstream(logs, 20.0, 16)
    mariadb = procs.MariaDB()
    url = f"sqlite+aiosqlite:///{logs / 'routing.db'}" if db_kind == "sqlite" else mariadb.create("routing")
    try:
        await asyncio.to_thread(upgrade, url)
        config = Config(database_url=url, llm_base_url=f"http://127.0.0.1:{upstream.ports['http']}/v1")
        db = Database(url)
        backend = make_backend(config)
        runner = TurnRunner(db, backend, Catalog(backend), QuotaGuard(make_storage(None)), runner_id="bench-routing")
        principal = Principal("default", admin=True)
        sessions = SessionService(db, None)  # type: ignore[arg-type]
        first_any: dict[str, list[float]] = {mode: [] for mode in MODES}
        first_answer: dict[str, list[float]] = {mode: [] for mode in MODES}
        for index in range(turns + warm):
            for mode in MODES:
                view = await sessions.create(principal, "", "", Settings(model="late-16"), {})
                inputs = [InputMessage(role="user", content="Write sixteen words about benchmarks.")]
                started = time.perf_counter()
                any_at = answer_at = None
                async for event in runner.run(principal, view.row.id, inputs, TurnOptions(routing_mode=mode)):
                    if event.kind == "delta":
                        any_at = any_at or time.perf_counter()
                        if event.delta.content and answer_at is None:
                            answer_at = time.perf_counter()
                if index >= warm and any_at and answer_at:
                    first_any[mode].append(any_at - started)
                    first_answer[mode].append(answer_at - started)
        summary = {
            mode: {"first_delta_ms": stats_ms(first_any[mode]), "first_answer_ms": stats_ms(first_answer[mode])}
            for mode in MODES
        }
        base_any = summary["passthrough"]["first_delta_ms"]["p50"]
        base_answer = summary["passthrough"]["first_answer_ms"]["p50"]
        for mode in MODES:
            summary[mode]["added_first_delta_p50_ms"] = round(summary[mode]["first_delta_ms"]["p50"] - base_any, 2)
            summary[mode]["added_first_answer_p50_ms"] = round(summary[mode]["first_answer_ms"]["p50"] - base_answer, 2)
        await backend.aclose()
        await db.dispose()
        return {"db": db_kind, "turns": turns, "modes": summary}
    finally:
        upstream.stop()
        mariadb.drop_all()


def describe(result: dict[str, Any]) -> str:
    """One line for the bench log."""
    parts = []
    for mode, figures in result["modes"].items():
        any_p50, answer_p50 = figures["first_delta_ms"]["p50"], figures["first_answer_ms"]["p50"]
        parts.append(
            f"{mode} first delta p50 {any_p50:.1f} ms (+{figures['added_first_delta_p50_ms']:.1f}), "
            f"first answer p50 {answer_p50:.1f} ms (+{figures['added_first_answer_p50_ms']:.1f})"
        )
    return f"routing ({result['db']}, {result['turns']} turns each): " + "; ".join(parts)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", choices=("sqlite", "mariadb"), default="mariadb")
    parser.add_argument("--turns", type=int, default=40)
    args = parser.parse_args()
    print(describe(asyncio.run(measure(args.db, args.turns))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
