"""A TCP proxy that a test can cut and restore, to take a server "away" without
touching it (e.g. MariaDB, which other tests share).

``TcpProxy("127.0.0.1", 3306)`` listens on a free 127.0.0.1 port (``port``)
and pipes every connection to the target, in a daemon thread with its own
event loop. ``cut()`` stops listening (new connections are refused) and
resets every open connection, as a database server restart does;
``restore()`` listens again on the same port. ``freeze()`` keeps every
connection open and accepts new ones but forwards nothing (a stalled server
or a network partition: the peer waits, nothing tells it); ``thaw()`` forwards
what was held and carries on. Also a context manager.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
from typing import Self


class TcpProxy:
    """See the module docstring. ``accepted`` counts connections made through the proxy."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self.accepted = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._flowing: asyncio.Event | None = None

    def start(self) -> Self:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="tcp-proxy", daemon=True)
        self._thread.start()
        self._call(self._make_flowing())
        self.restore()
        return self

    async def _make_flowing(self) -> None:
        self._flowing = asyncio.Event()
        self._flowing.set()

    def freeze(self) -> None:
        """Forwards nothing from now on, in either direction, and closes nothing."""
        assert self._loop is not None and self._flowing is not None
        self._loop.call_soon_threadsafe(self._flowing.clear)

    def thaw(self) -> None:
        """Forwards again, what was held first."""
        assert self._loop is not None and self._flowing is not None
        self._loop.call_soon_threadsafe(self._flowing.set)

    def _call(self, coro: object) -> object:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)  # type: ignore[arg-type]

    def restore(self) -> None:
        """Listens again (idempotent)."""
        self._call(self._listen())

    def cut(self) -> None:
        """Refuses new connections and resets the open ones."""
        self._call(self._cut())

    def stop(self) -> None:
        if self._loop is None:
            return
        self.thaw()
        self.cut()
        self._call(self._finish())
        self._loop.call_soon_threadsafe(self._loop.stop)
        assert self._thread is not None
        self._thread.join(5)
        self._loop.close()
        self._loop = None

    async def _listen(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(self._pipe, "127.0.0.1", self.port, reuse_address=True)

    async def _cut(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            sock = writer.get_extra_info("socket")
            if sock is not None:  # RST, not FIN: the peer sees the connection reset
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
        self._writers.clear()

    async def _finish(self) -> None:
        """Ends the connection tasks, so that none is left pending."""
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _pipe(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        assert self._flowing is not None
        await self._flowing.wait()
        try:
            server_reader, server_writer = await asyncio.open_connection(*self.target)
        except OSError:
            client_writer.transport.abort()
            return
        self._writers |= {client_writer, server_writer}

        async def copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while data := await reader.read(65536):
                    assert self._flowing is not None
                    await self._flowing.wait()
                    writer.write(data)
                    await writer.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                self._writers.discard(writer)
                writer.close()

        await asyncio.gather(copy(client_reader, server_writer), copy(server_reader, client_writer))

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
