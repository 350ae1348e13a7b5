"""``agentapi serve --workers N``: N processes serving one gRPC port and one
bridge port, with SO_REUSEPORT (the kernel spreads new connections over them).

The parent (``supervise``) runs no server: it starts the workers (spawned
processes, each ``server.app.run`` with its own event loop), prints where
agentapi listens once every worker serves, forwards SIGTERM and SIGINT (each
worker drains as a single process does) and exits 0 when all of them stopped
cleanly. Worker ``i`` is the runner ``<runner id>/w<i>``, so the turns and
idempotency keys it held are its own in the ledger.

A worker that dies while serving is restarted with the same index, so the new
process recovers at once what its predecessor left IN_PROGRESS (see
``server/domain/recovery.py``); more than ``MAX_RESTARTS`` deaths within
``RESTART_WINDOW_S``, or a worker that dies before it serves, stops the others
and makes the parent exit 1.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import socket
import sys
import time
from collections import deque
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import Any

from server import logs
from server.config import Config

log = logging.getLogger("agentapi.workers")

MAX_RESTARTS = 5
RESTART_WINDOW_S = 60.0
# Exit codes of a worker told to stop before it installed its own handlers.
_STOPPED_BY_SIGNAL = (0, -signal.SIGTERM, -signal.SIGINT)


def bind_socket(addr: str, reuse_port: bool, backlog: int = 2048) -> socket.socket:
    """A listening TCP socket on ``host:port`` (``[v6]:port`` too). With
    ``reuse_port`` other sockets with SO_REUSEPORT (the other workers) can
    bind the same port; without it, such a group makes the bind fail.

    The protocol is named (IPPROTO_TCP) because asyncio sets TCP_NODELAY only
    on sockets that say so: with proto 0, Nagle held each SSE event behind the
    response headers until the client's delayed ACK, 40 ms a response."""
    host, port = addr.rsplit(":", 1)
    host = host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, int(port)))
        sock.listen(backlog)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def worker_config(config: Config, index: int) -> Config:
    """Worker ``index``'s configuration: its own runner id."""
    return replace(config, runner_id=f"{config.effective_runner_id}/w{index}")


def _die_with_parent(parent_pid: int) -> None:
    """Linux: SIGTERM (a drain) when the parent dies, so no worker outlives it."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    if os.getppid() != parent_pid:
        os.kill(os.getpid(), signal.SIGTERM)


def _worker_main(config: Config, only: str | None, index: int, conn: Connection, parent_pid: int) -> None:
    """A worker process: serves until SIGTERM; tells the parent its ports once it serves."""
    # The terminal's Ctrl-C reaches every process of the group; the parent
    # forwards it as SIGTERM, and serve() installs its own handler for both.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logs.setup(config.log_level, config.log_format, worker=index, secrets=config.secrets)
    from server import observability

    observability.setup()  # each worker exports its own spans
    _die_with_parent(parent_pid)
    from server.app import run

    def ready(grpc_port: int | None, http_port: int | None) -> None:
        conn.send((grpc_port, http_port))
        conn.close()

    run(config, only, ready=ready)


@dataclass
class _Worker:
    index: int
    process: BaseProcess
    conn: Connection
    ports: tuple[int | None, int | None] | None = None


def port_in_use(addr: str) -> str | None:
    """Why ``addr`` cannot be bound by a new SO_REUSEPORT group, or None: a
    socket without SO_REUSEPORT fails to bind while any other socket (another
    agentapi's workers included) holds the port, which SO_REUSEPORT would join."""
    try:
        bind_socket(addr, reuse_port=False, backlog=1).close()
    except OSError as exc:
        return f"cannot listen on {addr}: {exc.strerror or exc}"
    return None


def supervise(config: Config, only: str | None = None) -> int:
    """Runs ``config.workers`` worker processes until SIGTERM or SIGINT; returns
    the exit code: 0 when every worker stopped cleanly, else 1."""
    addrs = [a for name, a in (("grpc", config.grpc_addr), ("http", config.http_addr)) if only in (None, name)]
    for addr in addrs:
        if problem := port_in_use(addr):
            print(f"agentapi: {problem}", file=sys.stderr)
            return 1
    if not config.redis_url:
        log.warning(
            "rate limits count in each of the %d workers: a tenant gets up to %d times its limit;"
            " set AGENTAPI_REDIS_URL for exact limits (budgets are exact: they are read from the database)",
            config.workers,
            config.workers,
        )
    from server.observability import metrics

    # Before any worker starts: they inherit the directory and share /metrics through it.
    metrics_dir = metrics.prepare_multiprocess()
    context = multiprocessing.get_context("spawn")
    workers: dict[int, _Worker] = {}
    state = {"stopping": False, "failed": False}

    def start(index: int) -> None:
        receive, send = context.Pipe(duplex=False)
        process = context.Process(
            target=_worker_main,
            args=(worker_config(config, index), only, index, send, os.getpid()),
            name=f"agentapi-w{index}",
        )
        process.start()
        send.close()
        workers[index] = _Worker(index, process, receive)
        if state["stopping"]:  # a signal came while it was starting
            _terminate(workers[index])

    def stop_all(signum: int = signal.SIGTERM, frame: Any = None) -> None:
        state["stopping"] = True
        for worker in list(workers.values()):
            _terminate(worker)

    previous = {sig: signal.signal(sig, stop_all) for sig in (signal.SIGTERM, signal.SIGINT)}
    deaths: deque[float] = deque()
    announced = False
    try:
        for index in range(config.workers):
            start(index)
        while workers:
            starting = {w.conn: w for w in workers.values() if w.ports is None and not w.conn.closed}
            exits = {w.process.sentinel: w for w in workers.values()}
            for ready in wait([*starting, *exits]):
                if ready in starting:
                    worker = starting[ready]
                    with contextlib.suppress(EOFError, OSError):
                        worker.ports = worker.conn.recv()
                        log.info("worker w%d (pid %d) serving", worker.index, worker.process.pid)
                    worker.conn.close()
                    continue
                worker = exits[ready]
                worker.process.join()
                code = worker.process.exitcode
                metrics.process_dead(worker.process.pid)  # its live gauges leave the sums
                del workers[worker.index]
                worker.conn.close()
                if state["stopping"]:
                    if code not in _STOPPED_BY_SIGNAL:
                        log.error("worker w%d exited with code %s while stopping", worker.index, code)
                        state["failed"] = True
                    continue
                if worker.ports is None:
                    log.error("worker w%d exited with code %s before it served: stopping", worker.index, code)
                    state["failed"] = True
                    stop_all()
                    continue
                now = time.monotonic()
                deaths.append(now)
                while deaths and deaths[0] < now - RESTART_WINDOW_S:
                    deaths.popleft()
                if len(deaths) > MAX_RESTARTS:
                    log.error(
                        "worker w%d exited with code %s, the %d-th worker death in %.0f s: stopping",
                        worker.index,
                        code,
                        len(deaths),
                        RESTART_WINDOW_S,
                    )
                    state["failed"] = True
                    stop_all()
                    continue
                log.error(
                    "worker w%d (pid %d) exited with code %s: restarting it", worker.index, worker.process.pid, code
                )
                start(worker.index)
            if not announced and not state["stopping"] and all(w.ports is not None for w in workers.values()):
                announced = True
                _announce(config, only, workers)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for worker in workers.values():  # only after an exception of our own
            worker.process.kill()
            worker.process.join()
        metrics.cleanup(metrics_dir)
    log.info("all workers stopped")
    return 1 if state["failed"] else 0


def _terminate(worker: _Worker) -> None:
    with contextlib.suppress(ProcessLookupError, ValueError, AttributeError):
        if worker.process.pid is not None and worker.process.exitcode is None:
            os.kill(worker.process.pid, signal.SIGTERM)


def _announce(config: Config, only: str | None, workers: dict[int, _Worker]) -> None:
    from server.app import announce

    ports = next(iter(workers.values())).ports
    assert ports is not None
    announce(config, ports[0], ports[1])
    pids = ", ".join(f"w{w.index} pid {w.process.pid}" for w in sorted(workers.values(), key=lambda w: w.index))
    print(
        f"agentapi workers: {config.workers} ({pids}), runner ids {config.effective_runner_id}/w<index>",
        flush=True,
    )
