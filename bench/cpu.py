"""Target 7: CPU time of per-turn token counting and history windowing.

The module under test, ``server/domain/history.py`` (tiktoken counting and the
history window), is being written alongside this harness. Until it exists this
arm is skipped with that reason in the results, rather than measuring a
stand-in of our own.
"""

from __future__ import annotations

import importlib
from typing import Any


def measure_history_cpu(iterations: int) -> dict[str, Any]:
    try:
        importlib.import_module("server.domain.history")
    except ModuleNotFoundError:
        return {
            "skipped": "TODO: server/domain/history.py (token counting + history windowing) does not exist yet; "
            "target 7 is measured once it lands",
        }
    return {"skipped": "TODO: server/domain/history.py exists but this arm does not know its API yet"}
