"""Issue 7's benchmark: what agentapi adds, side by side with direct upstream
calls and with LiteLLM, in one run on this machine.

    python -m bench.run            # full run: bench/results/<date>.{json,png,md}
    python -m bench.run --quick    # CI: under 60 s, asserts only that every arm works

Processes (each its own; see bench/README.md for how they share the 2 cores):
  upstream      bench/upstream.py: paced-N (N deltas at 20 ms), instant, hold
  litellm       LiteLLM proxy (.venv-litellm) in front of the upstream
  dbproxy       bench/dbproxy.py: MariaDB behind +0 ms and +5 ms COMMIT delays
  agentapi-*    `agentapi serve --migrate`: gRPC + the JSON bridge in one process
                  sqlite, mariadb            -> upstream     arms C, D
                  sqlite-litellm, mariadb-litellm -> LiteLLM arm C'
                  mariadb-proxy0, mariadb-sync5 -> upstream  target 6 (COMMIT +0 / +5 ms)
  this process  the load generator (bench/loadgen.py)

Phases, each arm measured with the same client loop and interleaved with the
others (arm order rotates every round or level):
  memory       resident memory per idle open stream (fresh processes, first)
  ttft         1 stream: turns one at a time, round-robin over every arm
  itl          open loop at ~100 concurrent streams: TTFT, ITL, end-to-end
  capacity     closed loop at rising concurrency: the largest with no lost
               delta and no gap over 40 ms (and added TTFT p99 <= 50 ms)
  throughput   closed loop, non-streamed turns: turns/s against concurrency
  cpu          per-turn token counting and history windowing (in process)
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import gc
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

from bench import procs
from bench.loadgen import (
    AgentapiProcess,
    Arm,
    BridgeArm,
    GrpcArm,
    LoopLag,
    OpenAIArm,
    Turn,
    Window,
    closed_loop,
    open_loop,
)

# With --ref the run happens in a snapshot; results, caches and the LiteLLM venv stay in the checkout.
HOME = Path(os.environ.get("BENCH_HOME") or procs.REPO)
RESULTS = HOME / "bench" / "results"
CACHE = HOME / "bench" / ".cache"
GAP_LIMIT_S = 0.040


# The first delta one pace after the request (bench/upstream.py), for target 6's second measurement.
LATE_TTFT_MODEL = "late-1"
# agentapi processes started with ``--workers`` (AGENTAPI_WORKERS) above 1.
WORKERS = {"mariadb-w2": 2}


@dataclass
class Plan:
    """How much of each phase to run."""

    pace_ms: float = 20.0
    deltas: int = 64
    session_uses: int = 8
    memory_streams: int = 200
    memory_settle_s: float = 1.0
    memory_warm_turns: int = 10
    ttft_model: str = "paced-1"
    ttft_warm: int = 5
    ttft_rounds: int = 200
    itl_streams: int = 100
    itl_warm_s: float = 1.5
    itl_window_s: float = 4.0
    itl_rounds: int = 1
    itl_drain_s: float = 4.0
    capacity_levels: list[int] = field(default_factory=lambda: [2, 5, 10, 25, 50, 100, 150, 200, 250, 300])
    capacity_ramp_s: float = 1.3
    capacity_window_s: float = 2.4
    throughput_levels: list[int] = field(default_factory=lambda: [1, 4, 16, 48])
    throughput_ramp_s: float = 0.4
    throughput_window_s: float = 2.0
    cpu_iterations: int = 2000
    step_runs: int = 200  # runs of each arm of the steps phase (bench/steps.py)
    routing_turns: int = 40  # turns of each mode of the routing phase (bench/routing.py)
    quiet_limit_s: float = 15.0  # the longest wait for the machine to go quiet before a window

    @property
    def stream_model(self) -> str:
        return f"paced-{self.deltas}"

    @property
    def stream_s(self) -> float:
        return (self.deltas - 1) * self.pace_ms / 1000


FULL = Plan()
QUICK = Plan(
    deltas=8,
    memory_streams=10,
    memory_settle_s=0.1,
    memory_warm_turns=3,
    ttft_warm=2,
    ttft_rounds=4,
    itl_streams=6,
    itl_warm_s=0.15,
    itl_window_s=0.3,
    itl_drain_s=3.0,
    capacity_levels=[5],
    capacity_ramp_s=0.15,
    capacity_window_s=0.25,
    throughput_levels=[4],
    throughput_ramp_s=0.1,
    throughput_window_s=0.25,
    cpu_iterations=50,
    step_runs=5,
    routing_turns=3,
    quiet_limit_s=0.0,
)


# --------------------------------------------------------------------------- #
# Statistics
# --------------------------------------------------------------------------- #


def pct(ordered: list[float], p: float) -> float:
    """Nearest-rank percentile of sorted samples."""
    return ordered[max(0, min(len(ordered) - 1, math.ceil(p * len(ordered)) - 1))]


def stats_ms(samples: list[float], cdf: bool = False) -> dict[str, Any]:
    """p50/p90/p99/max/mean in milliseconds; with ``cdf``, quantile points for the chart."""
    if not samples:
        return {"n": 0}
    ordered = sorted(samples)
    out: dict[str, Any] = {
        "n": len(ordered),
        "p50": round(pct(ordered, 0.50) * 1000, 3),
        "p90": round(pct(ordered, 0.90) * 1000, 3),
        "p99": round(pct(ordered, 0.99) * 1000, 3),
        "max": round(ordered[-1] * 1000, 3),
        "mean": round(sum(ordered) / len(ordered) * 1000, 3),
    }
    if cdf:
        points = [i / 100 for i in range(1, 100)] + [0.995, 0.999, 1.0]
        out["cdf"] = [[p, round(pct(ordered, p) * 1000, 3)] for p in points]
    return out


def _clean(summary: dict[str, Any]) -> bool:
    """No error, no lost or reordered delta, no gap over 40 ms."""
    return (
        summary["turns"] > 0
        and summary["errors"] == 0
        and summary["lost_or_reordered"] == 0
        and summary["gaps_over_40ms"] == 0
    )


def summarize(window: Window, cdf: bool = False) -> dict[str, Any]:
    counted = window.counted
    ok = [t for t in counted if t.ok]
    gaps = [g for t in ok for g in t.gaps]
    errors = [t.error for t in counted if t.error]
    lost = sum(1 for t in counted if not t.error and (t.n != t.expected or not t.in_order))
    wall = window.stop - window.start
    return {
        "turns": len(counted),
        "ok": len(ok),
        "errors": len(errors),
        "error_examples": sorted(set(errors))[:3],
        "lost_or_reordered": lost,
        "gaps_over_40ms": sum(1 for g in gaps if g > GAP_LIMIT_S),
        "turns_per_s": round(window.completed_in_window / wall, 1) if wall > 0 else 0.0,
        "ttft_ms": stats_ms([t.ttft for t in ok if t.ttft is not None], cdf),
        "itl_ms": stats_ms(gaps, cdf),
        "e2e_ms": stats_ms([t.e2e for t in ok if t.e2e is not None], cdf),
        "max_gap_ms": round(max((t.max_gap for t in ok), default=0.0) * 1000, 3),
    }


# --------------------------------------------------------------------------- #
# The run
# --------------------------------------------------------------------------- #


class Bench:
    def __init__(self, plan: Plan, quick: bool, logs: Path) -> None:
        self.plan = plan
        self.quick = quick
        self.logs = logs
        self.procs: dict[str, procs.Proc] = {}
        self.litellm: Any = None
        self.mariadb = procs.MariaDB()
        self.agentapis: dict[str, AgentapiProcess] = {}
        self.arms: dict[str, Arm] = {}
        self.pids: dict[str, int] = {}
        self.lag = LoopLag()
        self.upstream_url = ""
        self.results: dict[str, Any] = {"phases": {}, "incidents": []}
        self.phase = "startup"
        self.log_lines: list[str] = []

    def say(self, message: str) -> None:
        line = f"[{time.strftime('%H:%M:%S')}] {message}"
        self.log_lines.append(line)
        print(line, flush=True)

    # --- processes -----------------------------------------------------------
    def start(self) -> None:
        from tests.support.litellm_proxy import LiteLLMProxy, available

        ok, reason = available(HOME / ".venv-litellm")
        if not ok:
            raise SystemExit(f"bench needs the LiteLLM venv: {reason} (make litellm)")
        plan = self.plan
        try:
            self.mariadb_variables = self.mariadb.variables()
        except Exception as exc:  # pymysql's OperationalError and friends
            raise SystemExit(
                f"bench needs MariaDB/MySQL at {procs.MYSQL_SERVER_URL} (AGENTAPI_BENCH_MYSQL_URL): {exc}"
            ) from None
        upstream = procs.start_upstream(self.logs, plan.pace_ms, plan.deltas)
        self.procs["upstream"] = upstream
        self.upstream_url = f"http://127.0.0.1:{upstream.ports['http']}"
        dbproxy = procs.start_dbproxy(self.logs, [0.0, 5.0])
        self.procs["dbproxy"] = dbproxy
        self.litellm = LiteLLMProxy(
            f"{self.upstream_url}/v1", master_key="sk-bench-litellm", venv=HOME / ".venv-litellm"
        )
        litellm_error: list[BaseException] = []

        def run_litellm() -> None:
            try:
                self.litellm.start(timeout=120)
            except BaseException as exc:  # reported below
                litellm_error.append(exc)

        import threading

        thread = threading.Thread(target=run_litellm, daemon=True)
        thread.start()
        direct = (f"{self.upstream_url}/v1", "sk-upstream")
        specs = {
            "sqlite": (self._sqlite("sqlite"), *direct),
            "mariadb": (self.mariadb.create("direct"), *direct),
            "mariadb-proxy0": (self.mariadb.create("proxy0", dbproxy.ports["delay0"]), *direct),
            "mariadb-sync5": (self.mariadb.create("sync5", dbproxy.ports["delay5"]), *direct),
            "mariadb-w2": (self.mariadb.create("w2"), *direct),
        }
        for name, (db_url, llm_url, llm_key) in specs.items():
            self.procs[f"agentapi-{name}"] = procs.start_agentapi(
                name, self.logs, db_url, llm_url, llm_key, workers=WORKERS.get(name, 1)
            )
        # The LiteLLM proxy's port is known once it runs: its agentapi pair starts then.
        thread.join()
        if litellm_error:
            raise litellm_error[0]
        via_litellm = (f"{self.litellm.base_url}/v1", self.litellm.master_key)
        later = {
            "sqlite-litellm": (self._sqlite("sqlite-litellm"), *via_litellm),
            "mariadb-litellm": (self.mariadb.create("litellm"), *via_litellm),
        }
        for name, (db_url, llm_url, llm_key) in later.items():
            self.procs[f"agentapi-{name}"] = procs.start_agentapi(name, self.logs, db_url, llm_url, llm_key)
        specs |= later
        for name in specs:
            proc = self.procs[f"agentapi-{name}"]
            procs.wait_http(proc, f"http://127.0.0.1:{proc.ports['http']}/healthz")
        self.pids = {name: proc.pid for name, proc in self.procs.items()}
        self.pids["litellm"] = self.litellm._proc.pid
        self.pids["bench"] = os.getpid()
        # MariaDB is not ours, but its CPU belongs to the MariaDB arms: read it, so "other" is other users.
        for process in psutil.process_iter(["name"]):
            if process.info["name"] in ("mariadbd", "mysqld"):
                self.pids["mariadb"] = process.pid
                break

    def ensure_litellm(self) -> None:
        """If the LiteLLM proxy died (it segfaulted here under overload), record it and restart it on the same
        port, so the arms behind it go on being measured; the incident is listed in the results."""
        proc = self.litellm._proc
        if proc is not None and proc.poll() is None:
            return
        import shutil

        from tests.support import litellm_proxy

        code = proc.returncode if proc is not None else None
        port = self.litellm.port
        saved = self.logs / f"litellm-exit-{len(self.results['incidents'])}.log"
        if self.litellm.log_path is not None and self.litellm.log_path.exists():
            shutil.copy(self.litellm.log_path, saved)
        self.litellm.stop()
        message = f"LiteLLM proxy exited with code {code} during phase {self.phase}; restarted on port {port}"
        self.say(message)
        self.results["incidents"].append({"phase": self.phase, "time": time.strftime("%H:%M:%S"), "what": message,
                                          "log": str(saved)})  # fmt: skip
        restarted = litellm_proxy.LiteLLMProxy(
            self.litellm.upstream_base_url, master_key=self.litellm.master_key, venv=HOME / ".venv-litellm"
        )
        original = litellm_proxy._free_port
        litellm_proxy._free_port = lambda: port  # the agentapi processes behind it know this port
        try:
            restarted.start(timeout=120)
        finally:
            litellm_proxy._free_port = original
        self.litellm = restarted
        self.pids["litellm"] = restarted._proc.pid

    def _sqlite(self, name: str) -> str:
        return f"sqlite+aiosqlite:///{self.logs / f'{name}.db'}"

    def build_arms(self) -> None:
        uses = self.plan.session_uses
        for name, proc in self.procs.items():
            if name.startswith("agentapi-"):
                short = name.removeprefix("agentapi-")
                workers = WORKERS.get(short, 1)
                channels = 1 if workers == 1 else 4 * workers  # one HTTP/2 connection reaches one worker
                self.agentapis[short] = AgentapiProcess(
                    short, proc.ports["grpc"], proc.ports["http"], procs.MASTER_KEY, uses, channels=channels
                )
        up = self.procs["upstream"].ports["http"]
        a = self.agentapis
        arms: list[Arm] = [
            OpenAIArm("A", "client -> upstream", "upstream", port=up, api_key="sk-upstream"),
            OpenAIArm("B", "client -> LiteLLM -> upstream", "litellm", port=self.litellm.port,
                      api_key=self.litellm.master_key),
            GrpcArm("C sqlite", "client -> agentapi gRPC -> upstream", "agentapi-sqlite", "sqlite",
                    agentapi=a["sqlite"]),
            GrpcArm("C mariadb", "client -> agentapi gRPC -> upstream", "agentapi-mariadb", "mariadb",
                    agentapi=a["mariadb"]),
            GrpcArm("C' sqlite", "client -> agentapi gRPC -> LiteLLM -> upstream", "agentapi-sqlite-litellm",
                    "sqlite", agentapi=a["sqlite-litellm"]),
            GrpcArm("C' mariadb", "client -> agentapi gRPC -> LiteLLM -> upstream", "agentapi-mariadb-litellm",
                    "mariadb", agentapi=a["mariadb-litellm"]),
            BridgeArm("D sqlite", "client -> agentapi bridge (SSE) -> upstream", "agentapi-sqlite", "sqlite",
                      agentapi=a["sqlite"]),
            BridgeArm("D mariadb", "client -> agentapi bridge (SSE) -> upstream", "agentapi-mariadb", "mariadb",
                      agentapi=a["mariadb"]),
            GrpcArm("C mariadb +0ms", "as C mariadb, MariaDB behind the COMMIT proxy, no delay",
                    "agentapi-mariadb-proxy0", "mariadb", agentapi=a["mariadb-proxy0"]),
            GrpcArm("C mariadb +5ms", "as C mariadb, every COMMIT held 5 ms (slow disk sync)",
                    "agentapi-mariadb-sync5", "mariadb", agentapi=a["mariadb-sync5"]),
            GrpcArm("C mariadb w2", "as C mariadb, `agentapi serve --workers 2` (two processes, one port)",
                    "agentapi-mariadb-w2", "mariadb", agentapi=a["mariadb-w2"]),
        ]  # fmt: skip
        # --arms narrows a run to some arms (A, the baseline, always stays).
        only = {n.strip() for n in os.environ.get("BENCH_ARMS", "").split(",") if n.strip()}
        self.arms = {arm.name: arm for arm in arms if not only or arm.name in only or arm.name == "A"}

    async def stop(self) -> None:
        for arm in self.arms.values():
            arm.close()
        for agentapi in self.agentapis.values():
            await agentapi.close()
        # Every process gets SIGTERM at once; each is then waited for (by its own pid).
        stoppers = [proc.stop for name, proc in self.procs.items() if name != "dbproxy"]
        if self.litellm is not None:
            stoppers.append(self.litellm.stop)
        await asyncio.gather(*(asyncio.to_thread(stop) for stop in stoppers))
        if "dbproxy" in self.procs:
            self.procs["dbproxy"].stop()
            self.results["dbproxy_log"] = [
                line for line in self.procs["dbproxy"].log_tail().splitlines() if line.startswith("delay")
            ]
        self.mariadb.drop_all()

    # --- helpers -------------------------------------------------------------------
    def _processes(self, arm: Arm) -> list[str]:
        names = [arm.process, "upstream", "bench"]
        if arm.name.startswith("C'"):
            names.append("litellm")
        if arm.db == "mariadb" and "mariadb" in self.pids:
            names.append("mariadb")
        return names

    async def upstream_stats(self) -> dict[str, Any]:
        async with httpx.AsyncClient() as client:
            return (await client.get(f"{self.upstream_url}/_stats")).json()

    async def measure(self, arm: Arm, run: Callable[[], Awaitable[Window]], cdf: bool = False) -> dict[str, Any]:
        """Runs one window with the client's GC off, and adds CPU, loop lag and upstream pacing."""
        if "litellm" in self._processes(arm) or arm.process == "litellm":
            await asyncio.to_thread(self.ensure_litellm)
        waited_s, busy_cores = await procs.wait_quiet(self.plan.quiet_limit_s)
        meter = procs.CpuMeter({n: self.pids[n] for n in self._processes(arm)})
        upstream_before = await self.upstream_stats()  # also resets the upstream's lateness figures
        gc.collect()
        gc.disable()
        self.lag.start()
        meter.begin()
        try:
            window = await run()
        finally:
            cores = meter.end()
            lag = await self.lag.stop()
            gc.enable()
        summary = summarize(window, cdf)
        summary["cores"] = cores
        summary["quiet_wait"] = {"waited_s": waited_s, "machine_cores_at_start": busy_cores}
        turns = max(1, len(window.turns))
        cpu_s = cores[arm.process] * cores["wall_s"]
        summary["sut_cpu_ms_per_turn"] = round(cpu_s / turns * 1000, 3)
        deltas = sum(t.n for t in window.turns)
        if deltas > turns:
            summary["sut_cpu_us_per_delta"] = round(cpu_s / deltas * 1e6, 1)
        summary["client_loop_lag_ms"] = stats_ms(lag)
        summary["upstream"] = upstream_after = await self.upstream_stats()
        requests = upstream_after["requests"] - upstream_before["requests"]
        if requests:
            connections = upstream_after["connections"] - upstream_before["connections"]
            summary["upstream_connections_per_request"] = round(connections / requests, 3)
        return summary

    # --- phases --------------------------------------------------------------------
    async def phase_memory(self) -> None:
        """Resident memory per idle open stream, on fresh processes: RSS with N
        streams held open by the upstream minus RSS before, over N."""
        plan = self.plan
        n = plan.memory_streams
        cases = [("B", "litellm"), ("C sqlite", "agentapi-sqlite"), ("C mariadb +0ms", "agentapi-mariadb-proxy0"),
                 ("D mariadb", "agentapi-mariadb")]  # fmt: skip
        out: dict[str, Any] = {"streams": n}
        async with httpx.AsyncClient() as control:
            for arm_name, process in cases:
                arm = self.arms[arm_name]
                await asyncio.to_thread(self.ensure_litellm)
                warm_model = f"instant-{plan.deltas}"
                await arm.prepare(warm_model, plan.memory_warm_turns)
                for _ in range(plan.memory_warm_turns):
                    await arm.stream(warm_model)
                await arm.prepare("hold", n)
                gc.collect()
                await asyncio.sleep(plan.memory_settle_s)
                before = procs.rss_bytes(self.pids[process])
                tasks = [asyncio.create_task(arm.stream("hold")) for _ in range(n)]
                # Until every stream is held, or none was added for 10 s (a failed turn never arrives).
                # Not less: on a slow day a fresh LiteLLM held its first stream, then none for 3 s.
                held, last_change, deadline = -1, time.monotonic(), time.monotonic() + 60
                while time.monotonic() < deadline and time.monotonic() - last_change < 10:
                    now_held = (await control.get(f"{self.upstream_url}/_stats")).json()["held_streams"]
                    if now_held != held:
                        held, last_change = now_held, time.monotonic()
                    if held >= n:
                        break
                    await asyncio.sleep(0.05)
                await asyncio.sleep(plan.memory_settle_s)
                during = procs.rss_bytes(self.pids[process])
                await control.post(f"{self.upstream_url}/_release")
                turns: list[Turn] = await asyncio.gather(*tasks)
                failed = sum(1 for t in turns if not t.ok)
                per_stream = (during - before) / max(1, held)
                out[arm_name] = {
                    "process": process,
                    "rss_before_mb": round(before / 2**20, 1),
                    "rss_open_mb": round(during / 2**20, 1),
                    "held": held,
                    "failed": failed,
                    "kb_per_stream": round(per_stream / 1024, 1),
                }
                self.say(f"memory {arm_name:16} {per_stream / 1024:7.1f} KB/stream ({held} held, {failed} failed)")
        self.results["phases"]["memory"] = out

    async def phase_ttft(self) -> None:
        """1 stream: turns one at a time, round-robin over every arm, order rotating."""
        plan = self.plan
        model = plan.ttft_model
        names = list(self.arms)
        total = plan.ttft_warm + plan.ttft_rounds
        for arm in self.arms.values():
            await arm.prepare(model, total)
        windows: dict[str, list[Turn]] = {name: [] for name in names}
        meter = procs.CpuMeter(self.pids)
        meter.begin()
        gc.collect()
        gc.disable()
        try:
            for r in range(total):
                await asyncio.to_thread(self.ensure_litellm)
                order = names[r % len(names) :] + names[: r % len(names)]
                for name in order:
                    turn = await self.arms[name].stream(model)
                    if r >= plan.ttft_warm:
                        windows[name].append(turn)
                    await asyncio.sleep(0.005)  # let post-turn work (logging, callbacks) finish
                if r % 50 == 49:
                    gc.collect()
        finally:
            gc.enable()
        out: dict[str, Any] = {"model": model, "rounds": plan.ttft_rounds, "cores": meter.end(), "arms": {}}
        for name, turns in windows.items():
            window = Window(turns, 0.0, math.inf)
            out["arms"][name] = summarize(window, cdf=True)
            s = out["arms"][name]["ttft_ms"]
            self.say(f"ttft 1 stream  {name:16} p50 {s.get('p50', 0):7.2f}  p99 {s.get('p99', 0):7.2f} ms "
                     f"({out['arms'][name]['errors']} errors)")  # fmt: skip
        out["late_first_delta"] = await self._ttft_late(total)
        self.results["phases"]["ttft_1_stream"] = out

    async def _ttft_late(self, total: int) -> dict[str, Any]:
        """Target 6 once more with the first delta one pace after the request
        (model ``late-1``), as a real model's first token takes time: the
        commit runs beside the upstream request, so it can only hide behind
        an upstream that takes some time to answer."""
        model, names = LATE_TTFT_MODEL, [n for n in self.arms if "+" in n]
        if not names:  # --arms left out the target-6 arms
            return {}
        for name in names:
            await self.arms[name].prepare(model, total)
        windows: dict[str, list[Turn]] = {name: [] for name in names}
        for r in range(total):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                turn = await self.arms[name].stream(model)
                if r >= self.plan.ttft_warm:
                    windows[name].append(turn)
                await asyncio.sleep(0.005)
        arms = {name: summarize(Window(turns, 0.0, math.inf)) for name, turns in windows.items()}
        for name, summary in arms.items():
            s = summary["ttft_ms"]
            self.say(f"ttft {model:9} {name:16} p50 {s.get('p50', 0):7.2f}  p99 {s.get('p99', 0):7.2f} ms")
        return {"model": model, "arms": arms}

    async def phase_itl(self) -> None:
        """Open loop at a fixed arrival rate giving ~N concurrent streams."""
        plan = self.plan
        model = plan.stream_model
        rate = plan.itl_streams / plan.stream_s
        names = [n for n in self.arms if "+" not in n]
        per_round = plan.itl_window_s / plan.itl_rounds
        out: dict[str, Any] = {"model": model, "streams": plan.itl_streams, "rate_per_s": round(rate, 2), "arms": {}}
        merged: dict[str, list[Turn]] = {n: [] for n in names}
        parts: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
        for r in range(plan.itl_rounds):
            order = names[r % len(names) :] + names[: r % len(names)]
            for name in order:
                arm = self.arms[name]
                await arm.prepare(model, int(rate * (plan.itl_warm_s + per_round + plan.stream_s)) + 10)
                holder: list[Window] = []

                async def run(arm: Arm = arm, holder: list[Window] = holder) -> Window:
                    window = await open_loop(
                        lambda: arm.stream(model), rate, plan.itl_warm_s, per_round, plan.stream_s + plan.itl_drain_s
                    )
                    holder.append(window)
                    return window

                parts[name].append(await self.measure(arm, run))
                merged[name].extend(holder[0].counted)
        for name in names:
            summary = summarize(Window(merged[name], 0.0, math.inf), cdf=True)
            summary["turns_per_s"] = round(summary["ok"] / plan.itl_window_s, 1)
            summary["windows"] = parts[name]
            out["arms"][name] = summary
            self.say(
                f"itl {plan.itl_streams:3} streams {name:16} ttft p50 {summary['ttft_ms'].get('p50', 0):7.2f} "
                f"p99 {summary['ttft_ms'].get('p99', 0):7.2f} | itl p50 {summary['itl_ms'].get('p50', 0):6.2f} "
                f"p99 {summary['itl_ms'].get('p99', 0):6.2f} max {summary['itl_ms'].get('max', 0):6.2f} ms"
                f" | {summary['errors']} err {summary['lost_or_reordered']} lost {summary['gaps_over_40ms']} gaps>40"
            )
        self.results["phases"]["itl"] = out

    async def phase_capacity(self) -> None:
        """Closed loop at rising concurrency; an arm stops at its first failing level."""
        plan = self.plan
        model = plan.stream_model
        names = [n for n in self.arms if "+" not in n]
        active = list(names)
        levels: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
        baseline: dict[int, dict[str, Any]] = {}
        for index, n in enumerate(plan.capacity_levels):
            order = active[index % len(active) :] + active[: index % len(active)] if active else []
            if "A" in order:  # A first: the baseline for the added-TTFT criterion
                order.remove("A")
                order.insert(0, "A")
            for name in order:
                arm = self.arms[name]
                expected = int(n * (plan.capacity_ramp_s + plan.capacity_window_s) / plan.stream_s) + 2 * n
                await arm.prepare(model, expected)

                async def run(arm: Arm = arm, n: int = n) -> Window:
                    return await closed_loop(lambda: arm.stream(model), n, plan.capacity_ramp_s, plan.capacity_window_s)

                summary = await self.measure(arm, run)
                summary["streams"] = n
                clean = _clean(summary)
                if not clean:
                    # Other users share this machine: a level fails only if a second try fails too.
                    first = summary
                    summary = await self.measure(arm, run)
                    summary["streams"] = n
                    summary["first_try"] = {k: first[k] for k in ("max_gap_ms", "gaps_over_40ms", "errors",
                                            "lost_or_reordered", "ttft_ms", "cores", "client_loop_lag_ms")}  # fmt: skip
                    clean = _clean(summary)
                summary["clean"] = clean
                if name == "A":
                    baseline[n] = summary
                base = baseline.get(n, {}).get("ttft_ms", {}).get("p99")
                p99 = summary["ttft_ms"].get("p99")
                summary["added_ttft_p99_ms"] = round(p99 - base, 3) if base is not None and p99 is not None else None
                summary["pass"] = clean
                summary["pass_with_ttft"] = clean and (
                    summary["added_ttft_p99_ms"] is not None and summary["added_ttft_p99_ms"] <= 50
                )
                levels[name].append(summary)
                self.say(
                    f"capacity {n:4} streams {name:16} {'clean' if clean else 'FAIL '} "
                    f"max gap {summary['max_gap_ms']:7.2f} ms, ttft p99 {p99 or 0:7.2f} ms, "
                    f"{summary['errors']} err, {summary['lost_or_reordered']} lost, "
                    f"{summary['gaps_over_40ms']} gaps>40, cores {summary['cores'].get(arm.process, 0):.2f}"
                )
                if not clean:
                    active.remove(name)
        out: dict[str, Any] = {"model": model, "levels": plan.capacity_levels, "arms": levels, "max_clean": {}}
        for name, runs in levels.items():
            out["max_clean"][name] = {
                "streams": max((r["streams"] for r in runs if r["pass"]), default=0),
                "streams_with_ttft": max((r["streams"] for r in runs if r["pass_with_ttft"]), default=0),
                "first_failure": next((r["streams"] for r in runs if not r["pass"]), None),
            }
        self.results["phases"]["capacity"] = out

    async def phase_throughput(self) -> None:
        """Closed loop of non-streamed turns (the upstream answers at once)."""
        plan = self.plan
        model = f"instant-{plan.deltas}"
        names = [n for n in self.arms if "+" not in n]
        out: dict[str, Any] = {"model": model, "levels": plan.throughput_levels, "arms": {n: [] for n in names}}
        for index, c in enumerate(plan.throughput_levels):
            order = names[index % len(names) :] + names[: index % len(names)]
            for name in order:
                arm = self.arms[name]
                await arm.prepare(model, int(c * 400 * (plan.throughput_ramp_s + plan.throughput_window_s)) // 4)

                async def run(arm: Arm = arm, c: int = c) -> Window:
                    return await closed_loop(
                        lambda: arm.unary(model), c, plan.throughput_ramp_s, plan.throughput_window_s
                    )

                summary = await self.measure(arm, run)
                summary["concurrency"] = c
                out["arms"][name].append(summary)
                self.say(
                    f"throughput c={c:3} {name:16} {summary['turns_per_s']:7.1f} turns/s  "
                    f"p50 {summary['e2e_ms'].get('p50', 0):7.2f} p99 {summary['e2e_ms'].get('p99', 0):7.2f} ms  "
                    f"{summary['errors']} err, agentapi/proxy CPU {summary['sut_cpu_ms_per_turn']:.2f} ms/turn"
                )
        self.results["phases"]["throughput"] = out

    async def phase_steps(self) -> None:
        """Issue 14: the cost of a server-side step, as a ratio to a one-step turn (see bench/steps.py)."""
        from bench.steps import describe, measure

        result = await measure("mariadb", self.plan.step_runs)
        self.results["phases"]["steps"] = result
        self.say(describe(result))

    async def phase_routing(self) -> None:
        """Issue 15: the added time to first token of each routing mode (see bench/routing.py)."""
        from bench.routing import describe, measure

        result = await measure("mariadb", self.plan.routing_turns)
        self.results["phases"]["routing"] = result
        self.say(describe(result))

    def phase_cpu(self) -> None:
        """Target 7: per-turn token counting and history windowing (see bench/cpu.py)."""
        from bench.cpu import measure_history_cpu

        result = measure_history_cpu(self.plan.cpu_iterations)
        self.results["phases"]["cpu"] = result
        self.say(f"cpu: {result.get('summary') or result.get('skipped')}")


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=procs.REPO, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def environment(bench: Bench) -> dict[str, Any]:
    import grpc

    try:
        litellm_version = subprocess.run(
            [str(procs.REPO / ".venv-litellm/bin/python"), "-c", "import importlib.metadata as m;"
             "print(m.version('litellm'))"], capture_output=True, text=True, check=False,
        ).stdout.strip()  # fmt: skip
    except OSError:
        litellm_version = ""
    return {
        "python": platform.python_version(),
        "grpcio": grpc.__version__,
        "litellm": litellm_version,
        "cpus": psutil.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "load_avg_at_start": [round(x, 2) for x in os.getloadavg()],
        "mariadb": getattr(bench, "mariadb_variables", {}),
        "git_commit": os.environ.get("BENCH_SOURCE_REF") or _git("rev-parse", "HEAD"),
        "source": "snapshot of the commit (git archive), with the working tree's bench/"
        if os.environ.get("BENCH_SOURCE_REF")
        else "working tree",
        "git_dirty_paths": [] if os.environ.get("BENCH_SOURCE_REF") else _git("status", "--porcelain").splitlines(),
    }


async def run(quick: bool, out_dir: Path, phases: list[str]) -> Path:
    plan = QUICK if quick else FULL
    CACHE.mkdir(exist_ok=True)
    logs = Path(tempfile.mkdtemp(prefix="run-", dir=CACHE))
    bench = Bench(plan, quick, logs)
    started = time.monotonic()
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H%M%SZ")
    bench.say(f"bench ({'quick' if quick else 'full'}): logs in {logs}")
    try:
        await asyncio.to_thread(bench.start)
        bench.build_arms()
        bench.results["run"] = {
            "date": stamp,
            "mode": "quick" if quick else "full",
            "plan": asdict(plan),
            "environment": environment(bench),
            "pids": bench.pids,
            "startup_s": round(time.monotonic() - started, 1),
        }
        bench.results["arms"] = {name: {"path": arm.path, "process": arm.process, "db": arm.db}
                                 for name, arm in bench.arms.items()}  # fmt: skip
        bench.say(f"started {len(bench.procs) + 1} processes in {time.monotonic() - started:.1f}s")
        idle = procs.CpuMeter(bench.pids)
        idle.begin()
        await asyncio.sleep(0.5 if quick else 2.0)
        bench.results["run"]["idle_cores"] = idle.end()
        gc.freeze()
        timings = bench.results["run"]["phase_s"] = {}
        for phase in phases:
            bench.phase = phase
            phase_started = time.monotonic()
            if phase == "cpu":
                bench.phase_cpu()
            else:
                await getattr(bench, f"phase_{phase}")()
            timings[phase] = round(time.monotonic() - phase_started, 1)
            bench.say(f"phase {phase} took {timings[phase]}s")
    finally:
        await bench.stop()
    bench.results["run"]["duration_s"] = round(time.monotonic() - started, 1)
    from bench import report

    bench.results["targets"] = report.targets(bench.results)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / f"{stamp}.json"
    json_path.write_text(json.dumps(bench.results, indent=1) + "\n")
    report.chart(bench.results, out_dir / f"{stamp}.png")
    table = report.table(bench.results)
    (out_dir / f"{stamp}.md").write_text(table + "\n")
    print(table)
    bench.say(f"wrote {json_path}, .png and .md in {bench.results['run']['duration_s']}s")
    return json_path


def check_quick(path: Path) -> int:
    """Quick mode proves the harness works: every arm produced successful turns in every phase."""
    results = json.loads(path.read_text())
    problems = []
    phases = results["phases"]
    for name, summary in phases.get("ttft_1_stream", {"arms": {}})["arms"].items():
        if summary["ok"] == 0:
            problems.append(f"ttft: {name} had no successful turn: {summary['error_examples']}")
    for phase in ("itl",):
        for name, summary in phases.get(phase, {"arms": {}})["arms"].items():
            if summary["ok"] == 0:
                problems.append(f"{phase}: {name} had no successful turn: {summary['error_examples']}")
    for phase in ("capacity", "throughput"):
        for name, runs in phases.get(phase, {"arms": {}})["arms"].items():
            if not runs or all(r["ok"] == 0 for r in runs):
                problems.append(f"{phase}: {name} had no successful turn")
    for name, entry in phases.get("memory", {}).items():
        if isinstance(entry, dict) and entry.get("held", 0) < phases["memory"]["streams"]:
            problems.append(f"memory: {name} held {entry.get('held')} streams of {phases['memory']['streams']}")
    if "steps" in phases and phases["steps"].get("steps", {}).get("two steps") != 2:
        problems.append(f"steps: the two-step arm did not take two steps: {phases['steps'].get('steps')}")
    if not path.with_suffix(".png").stat().st_size:
        problems.append("no chart")
    for problem in problems:
        print(f"bench-quick: {problem}", file=sys.stderr)
    print(f"bench-quick: {'FAILED' if problems else 'ok'}: {len(problems)} problems")
    return 1 if problems else 0


def rerun_at_ref(ref: str, module: str) -> int:
    """Runs ``module`` again with this process's arguments, less ``--ref REF``
    (or ``--ref=REF``), against a snapshot of ``ref`` (see :func:`run_snapshot`)."""
    argv: list[str] = []
    skip = False
    for arg in sys.argv[1:]:
        if skip:
            skip = False
        elif arg == "--ref":
            skip = True
        elif not arg.startswith("--ref="):
            argv.append(arg)
    return run_snapshot(ref, argv, module=module)


def run_snapshot(ref: str, argv: list[str], module: str = "bench.run") -> int:
    """Runs the bench against ``ref``'s server, gateway and client code (a git
    archive under bench/.cache/), with this checkout's bench/ copied over it: a
    stable subject while the working tree is being edited, and a named commit."""
    import shutil

    sha = _git("rev-parse", "--verify", f"{ref}^{{commit}}")
    if not sha:
        raise SystemExit(f"unknown git ref {ref!r}")
    CACHE.mkdir(exist_ok=True)
    dest = CACHE / f"src-{sha[:12]}"
    if not dest.exists():
        tmp = Path(tempfile.mkdtemp(prefix="src-", dir=CACHE))
        archive = subprocess.run(["git", "archive", sha], cwd=procs.REPO, capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(tmp)], input=archive, check=True)
        tmp.rename(dest)
    bench_dir = dest / "bench"
    bench_dir.mkdir(exist_ok=True)
    for source in Path(__file__).resolve().parent.glob("*.py"):
        shutil.copy2(source, bench_dir / source.name)
    env = os.environ | {
        "PYTHONPATH": f"{dest}{os.pathsep}{dest / 'clients' / 'python' / 'src'}",
        "BENCH_HOME": str(procs.REPO),
        "BENCH_SOURCE_REF": sha,
    }
    print(f"bench: measuring {sha[:12]} from {dest}", flush=True)
    return subprocess.run([sys.executable, "-m", module, *argv], cwd=dest, env=env, check=False).returncode


def main() -> int:
    parser = argparse.ArgumentParser(description="agentapi benchmark harness (issue 7)")
    parser.add_argument("--quick", action="store_true", help="CI smoke run: small counts, under 60 s")
    parser.add_argument("--out", type=Path, help="output folder (default bench/results, quick: bench/.cache/quick)")
    parser.add_argument(
        "--phases",
        default="memory,ttft,itl,capacity,throughput,steps,routing,cpu",
        help="comma-separated subset, in order",
    )
    parser.add_argument("--ref", help="measure this commit (a snapshot) instead of the working tree")
    parser.add_argument("--arms", help="comma-separated arm names to measure (default all; A always runs)")
    args = parser.parse_args()
    if args.arms:
        os.environ["BENCH_ARMS"] = args.arms  # read by Bench.build_arms, here or in a --ref snapshot
    if args.ref:
        argv = ["--phases", args.phases] + (["--quick"] if args.quick else [])
        if args.out:
            argv += ["--out", str(args.out.resolve())]
        return run_snapshot(args.ref, argv)
    out = args.out or (CACHE / "quick" if args.quick else RESULTS)
    path = asyncio.run(run(args.quick, out, [p.strip() for p in args.phases.split(",") if p.strip()]))
    return check_quick(path) if args.quick else 0


if __name__ == "__main__":
    sys.exit(main())
