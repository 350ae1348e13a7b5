"""Target 7: CPU time of per-turn token counting and history windowing.

Measures ``server/domain/history.py`` (the module the turn calls) the way one
turn uses it (server/domain/runs/): ``count_message`` for the new user
message, the budget's ``count_text`` of the system prompt and ``count_tools``
of the tool definitions, ``window`` over the stored history (whose counts are
read from the rows, not re-tokenized), and ``count_message`` for the finished
reply. Run in this process with ``time.process_time`` over many turns, after a
warm-up that loads the tiktoken encoding (a one-off per process).

Two model names: an OpenAI-family one (``gpt-4o-mini``: exact counting with
tiktoken, the expensive path) and a non-OpenAI one (``paced-64``: 4 characters a
token). The history is the bench's session shape at its longest: 7 earlier
turns (a user message and a 64-word reply each), plus a system prompt and two
tools. If the module is missing the arm is skipped with the reason.
"""

from __future__ import annotations

import importlib
import time
from dataclasses import dataclass
from typing import Any

REPLY = (
    "Benchmarks measure what a layer adds, so each arm runs the same load against the same upstream, and the "
    "difference between arms is the cost of the layer. Time to first token, the gaps between tokens and the "
    "end-to-end latency are reported at the median, the 99th percentile and the maximum, because averages hide "
    "the pauses users notice. Results are recorded with the commit that produced them."
)
USER = "Summarise the last answer in two sentences and list the three figures that matter most to an operator."
SYSTEM = "You are a concise assistant for the operations team. Answer in plain English and cite figures exactly."
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "lookup_metric",
            "description": "Read a named metric from the monitoring system.",
            "parameters": {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]},
        },
    },
    {
        "type": "function",
        "function": {
            "name": "open_ticket",
            "description": "Open an incident ticket.",
            "parameters": {"type": "object", "properties": {"title": {"type": "string"}}, "required": ["title"]},
        },
    },
]


@dataclass
class Row:
    role: str
    content: str
    tool_calls: list[dict[str, Any]] | None
    token_count: int
    status: str = "completed"


def measure_history_cpu(iterations: int) -> dict[str, Any]:
    try:
        history = importlib.import_module("server.domain.history")
    except ModuleNotFoundError:
        return {
            "skipped": "TODO: server/domain/history.py (token counting + history windowing) does not exist in the "
            "measured code; target 7 is measured once it lands",
        }
    needed = ("count_message", "count_text", "count_tools", "window")
    missing = [name for name in needed if not hasattr(history, name)]
    if missing:
        return {"skipped": f"TODO: server/domain/history.py lacks {missing}; update bench/cpu.py to its API"}
    out: dict[str, Any] = {"iterations": iterations, "models": {}}
    for model in ("gpt-4o-mini", "paced-64"):
        out["models"][model] = _measure(history, model, iterations)
    worst = max(out["models"].values(), key=lambda m: m["per_turn_ms"])
    out["per_turn_ms"] = worst["per_turn_ms"]
    out["summary"] = ", ".join(f"{m}: {v['per_turn_ms']:.3f} ms/turn" for m, v in out["models"].items())
    return out


def _measure(history: Any, model: str, iterations: int) -> dict[str, Any]:
    rows = []
    for _ in range(7):
        for role, content in (("user", USER), ("assistant", REPLY)):
            rows.append(Row(role, content, None, history.count_message({"role": role, "content": content}, model)))

    def one_turn() -> None:
        history.count_message({"role": "user", "content": USER}, model)
        usable = [m for m in rows if not (m.role == "assistant" and m.status in ("failed", "in_progress"))]
        fixed = history.count_text(SYSTEM, model) + history.count_tools(TOOLS, model) + 4096
        history.window(usable, 128_000 - fixed)
        history.count_message({"role": "assistant", "content": REPLY}, model)

    def budget() -> None:
        history.count_text(SYSTEM, model)
        history.count_tools(TOOLS, model)

    for _ in range(20):
        one_turn()  # warm-up: loads the tiktoken encoding, fills caches
    started = time.process_time()
    for _ in range(iterations):
        one_turn()
    per_turn_ms = (time.process_time() - started) / iterations * 1000
    parts = {}
    for name, call in (
        ("count_message(user)", lambda: history.count_message({"role": "user", "content": USER}, model)),
        ("count_text(system)+count_tools", budget),
        ("window(14 messages)", lambda: history.window(rows, 100_000)),
        ("count_message(64-word reply)", lambda: history.count_message({"role": "assistant", "content": REPLY}, model)),
    ):
        started = time.process_time()
        for _ in range(iterations):
            call()
        parts[name] = round((time.process_time() - started) / iterations * 1000, 4)
    return {"per_turn_ms": round(per_turn_ms, 4), "parts_ms": parts}
