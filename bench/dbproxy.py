"""A TCP proxy in front of MariaDB that makes every COMMIT take N ms longer.

    python -m bench.dbproxy --target 127.0.0.1:3306 --delay-ms 0 --delay-ms 5

Prints ``listening <port> <delay_ms>`` for each ``--delay-ms`` (one listening
port each), then forwards bytes both ways. In the client-to-server direction it
frames the MySQL protocol (3-byte length, 1-byte sequence id) and holds a
``COM_QUERY`` packet whose text starts with ``COMMIT`` for the delay before
passing it on. aiomysql (and so SQLAlchemy) commits with exactly that packet.

Why this stands for "disk sync slowed to 5 ms": the server runs with
``innodb_flush_log_at_trx_commit=1``, so a COMMIT answers only after the redo
log is flushed; a slower flush delays exactly the COMMIT's reply, with the
transaction's locks held meanwhile. Holding the COMMIT packet for 5 ms before
the server sees it gives the caller the same 5 ms longer wait at the same point
of the protocol, and keeps the row locks 5 ms longer too. It needs no root, no
change to the shared MariaDB, and nothing in agentapi. The zero-delay port is
the control arm: the same extra hop without the delay.

On SIGTERM it prints how many COMMITs each port held and the mean extra wait.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import time

COM_QUERY = 0x03


class Counter:
    def __init__(self) -> None:
        self.commits = 0
        self.waited = 0.0


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        writer.close()


async def _client_to_server(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float, counter: Counter
) -> None:
    try:
        while True:
            header = await reader.readexactly(4)
            length = int.from_bytes(header[:3], "little")
            payload = await reader.readexactly(length)
            if (
                delay
                and header[3] == 0
                and payload[:1] == bytes([COM_QUERY])
                and payload[1:16].lstrip().upper().startswith(b"COMMIT")
            ):
                started = time.perf_counter()
                await asyncio.sleep(delay)
                counter.commits += 1
                counter.waited += time.perf_counter() - started
            writer.write(header + payload)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
        pass
    finally:
        writer.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", default="127.0.0.1:3306")
    parser.add_argument("--delay-ms", type=float, action="append", required=True)
    args = parser.parse_args()
    host, port = args.target.rsplit(":", 1)
    counters: dict[float, Counter] = {}
    servers = []
    for delay_ms in args.delay_ms:
        counter = counters[delay_ms] = Counter()

        async def handle(
            client_reader: asyncio.StreamReader,
            client_writer: asyncio.StreamWriter,
            delay: float = delay_ms / 1000,
            counter: Counter = counter,
        ) -> None:
            server_reader, server_writer = await asyncio.open_connection(host, int(port))
            await asyncio.gather(
                _client_to_server(client_reader, server_writer, delay, counter),
                _pump(server_reader, client_writer),
            )

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        servers.append(server)
        print(f"listening {server.sockets[0].getsockname()[1]} {delay_ms:g}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    for delay_ms, counter in counters.items():
        mean = counter.waited / counter.commits * 1000 if counter.commits else 0.0
        print(f"delay {delay_ms:g} ms: {counter.commits} commits held, mean {mean:.2f} ms", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
