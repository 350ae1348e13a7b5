"""Run a module under cProfile with a CPU-time clock (``time.thread_time``), so
waiting is not counted: ``python -m bench.cprof OUT.prof server.cli serve ...``.
Used by ``bench.profile --profiler cprofile``; the profile is written on exit."""

from __future__ import annotations

import cProfile
import runpy
import sys
import time


def main() -> None:
    out, module, *argv = sys.argv[1:]
    sys.argv = [module, *argv]
    profiler = cProfile.Profile(time.thread_time)
    profiler.enable()
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit:
        pass
    finally:
        profiler.disable()
        profiler.dump_stats(out)


if __name__ == "__main__":
    main()
