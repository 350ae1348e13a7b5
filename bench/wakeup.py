"""What one sleep-and-wake costs on this machine (a finding behind the per-delta figures).

    python -m bench.wakeup

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


def main() -> int:
    print("reader CPU per message, microseconds (lower is better)")
    print(f"{'gap between messages':>22} {'blocking recv':>14} {'epoll + recv':>13} {'asyncio':>9}")
    for gap in (0.0, 0.002, 0.020):
        row = [measure(gap, mode) for mode in ("recv", "epoll", "asyncio")]
        print(f"{gap * 1000:>19.0f} ms {row[0]:>14.1f} {row[1]:>13.1f} {row[2]:>9.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
