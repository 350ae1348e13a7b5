"""What one sleep-and-wake costs on this machine (a finding behind the per-delta figures).

    python -m bench.wakeup [--grpc]

A child process writes 200 small messages at a fixed gap; the parent waits
for each (blocking ``recv``, ``epoll``, or an asyncio stream, as a server's
event loop would) and reports its own CPU time per message
(``time.thread_time``). With no gap the data is already there and a message
costs a few microseconds; with a 20 ms gap (the bench's delta pace) the
reader goes idle between messages, and on this virtual machine every wake-up
then costs tens of microseconds in the kernel, and a few hundred in a Python
process with a large heap (caches and TLB refilled after each idle period).
That is why a paced delta costs agentapi far more CPU than the same delta
arriving in a burst (bench/turncost.py: ``--model paced-64`` against
``instant-64``).

``--grpc`` also starts one agentapi and times a unary ``Health.Check``
(no auth, no database) back to back and with 20 ms idle gaps: the cost of
a gRPC round trip when both sides, and grpc's own threads, have to wake up.
"""

from __future__ import annotations

import asyncio
import os
import select
import socket
import sys
import time

MESSAGES = 200


def _writer(sock: socket.socket, gap: float) -> None:
    for _ in range(MESSAGES):
        if gap:
            time.sleep(gap)
        sock.send(b"x" * 200)
    sock.close()


def measure(gap: float, mode: str) -> float:
    """CPU microseconds the reader spends per message."""
    reader, writer = socket.socketpair()
    pid = os.fork()
    if pid == 0:
        reader.close()
        _writer(writer, gap)
        os._exit(0)
    writer.close()
    received = 0
    started = time.thread_time()
    if mode == "asyncio":

        async def read() -> int:
            stream, transport = await asyncio.open_connection(sock=reader)
            count = 0
            while count < MESSAGES and (data := await stream.read(65536)):
                count += max(1, len(data) // 200)
            transport.close()
            return count

        received = asyncio.run(read())
    else:
        poller = select.epoll()
        poller.register(reader.fileno(), select.EPOLLIN)
        while received < MESSAGES:
            if mode == "epoll":
                poller.poll(1.0)
            data = reader.recv(65536)
            if not data:
                break
            received += max(1, len(data) // 200)
    cpu = time.thread_time() - started
    os.waitpid(pid, 0)
    return cpu / max(1, received) * 1e6


async def grpc_round_trips() -> None:
    import tempfile
    from pathlib import Path

    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from bench import procs
    from bench.run import CACHE, stats_ms

    CACHE.mkdir(exist_ok=True)
    logs = Path(tempfile.mkdtemp(prefix="wakeup-", dir=CACHE))
    upstream = procs.start_upstream(logs, 20.0, 64)
    db_url = f"sqlite+aiosqlite:///{logs / 'wakeup.db'}"
    agentapi = procs.start_agentapi("wakeup", logs, db_url, f"http://127.0.0.1:{upstream.ports['http']}/v1", "k")
    try:
        procs.wait_http(agentapi, f"http://127.0.0.1:{agentapi.ports['http']}/healthz")
        async with grpc.aio.insecure_channel(f"127.0.0.1:{agentapi.ports['grpc']}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            for _ in range(50):
                await stub.Check(health_pb2.HealthCheckRequest())
            for gap in (0.0, 0.020):
                samples = []
                for _ in range(300):
                    started = time.perf_counter()
                    await stub.Check(health_pb2.HealthCheckRequest())
                    samples.append(time.perf_counter() - started)
                    if gap:
                        await asyncio.sleep(gap)
                s = stats_ms(samples)
                print(f"gRPC Health.Check round trip, {gap * 1000:.0f} ms idle between calls: "
                      f"p50 {s['p50']:.2f} ms, p99 {s['p99']:.2f} ms")  # fmt: skip
    finally:
        agentapi.stop()
        upstream.stop()


def main() -> int:
    print("reader CPU per message, microseconds (lower is better)")
    print(f"{'gap between messages':>22} {'blocking recv':>14} {'epoll + recv':>13} {'asyncio':>9}")
    for gap in (0.0, 0.002, 0.020):
        row = [measure(gap, mode) for mode in ("recv", "epoll", "asyncio")]
        print(f"{gap * 1000:>19.0f} ms {row[0]:>14.1f} {row[1]:>13.1f} {row[2]:>9.1f}")
    if "--grpc" in sys.argv[1:]:
        asyncio.run(grpc_round_trips())
    return 0


if __name__ == "__main__":
    sys.exit(main())
