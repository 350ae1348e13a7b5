"""Real MCP servers for the tests, built with the official ``mcp`` SDK.

:class:`HttpMcpServer` serves an :class:`~mcp.server.mcpserver.MCPServer` over
streamable HTTP with uvicorn, in a thread with its own event loop, on a free
127.0.0.1 port. Its tools: ``add``, ``slow`` (sleeps), ``fail`` (raises),
``picture`` (an image and no text), ``stats`` (structured content only) and
``echo``, whose description or schema :meth:`HttpMcpServer.rewrite_echo`
changes at runtime. With ``required_header`` set, a request without that
header and value is answered 401 before it reaches the MCP app.

``STDIO_SCRIPT`` is a stdio server (tests/support/mcp_stdio_server.py) that
the SDK's stdio client starts as a subprocess.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import threading
from pathlib import Path
from typing import Any

import uvicorn
from mcp.server.mcpserver import Image, MCPServer

STDIO_SCRIPT = str(Path(__file__).with_name("mcp_stdio_server.py"))
PYTHON = sys.executable


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class HttpMcpServer:
    """A streamable-HTTP MCP server on a free port; a context manager that stops it.

    Attributes:
        url: the MCP endpoint, ``http://127.0.0.1:<port>/mcp``.
        calls: names of the tools called, in order (to prove a call did or did not reach it).
        slow_started: set when ``slow`` begins; ``slow_cancelled`` when the server cancelled it.
    """

    def __init__(self, required_header: tuple[str, str] | None = None) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}/mcp"
        self.required_header = required_header
        self.calls: list[str] = []
        self.seen_headers: list[dict[str, str]] = []
        self.slow_started = threading.Event()
        self.slow_cancelled = threading.Event()
        self.mcp = MCPServer("agentapi-test")
        self._register()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    def _register(self) -> None:
        mcp = self.mcp

        @mcp.tool(description="Adds two integers.")
        def add(a: int, b: int) -> int:
            self.calls.append("add")
            return a + b

        @mcp.tool(description="Sleeps, then answers.")
        async def slow(seconds: float) -> str:
            self.calls.append("slow")
            self.slow_started.set()
            try:
                await asyncio.sleep(seconds)
            except asyncio.CancelledError:
                self.slow_cancelled.set()
                raise
            return f"slept {seconds}"

        @mcp.tool(description="Always fails.")
        def fail(message: str) -> str:
            self.calls.append("fail")
            raise ValueError(message)

        @mcp.tool(description="Draws a tiny picture.")
        def picture() -> Image:
            self.calls.append("picture")
            return Image(data=b"\x89PNG\r\n\x1a\n" + b"\x00" * 8, format="png")

        @mcp.tool(description="Counts things.", structured_output=True)
        def stats() -> dict[str, int]:
            self.calls.append("stats")
            return {"apples": 3, "pears": 5}

        self.rewrite_echo("Echoes the text back.")

    def rewrite_echo(self, description: str, extra_parameter: bool = False) -> None:
        """Replaces the ``echo`` tool: a new description, and optionally a second parameter (a new schema)."""
        with contextlib.suppress(Exception):
            self.mcp.remove_tool("echo")
        if extra_parameter:

            def echo(text: str, loud: bool = False) -> str:
                self.calls.append("echo")
                return text.upper() if loud else text

        else:

            def echo(text: str) -> str:  # type: ignore[misc]
                self.calls.append("echo")
                return text

        self.mcp.add_tool(echo, name="echo", description=description)

    def _app(self) -> Any:
        app = self.mcp.streamable_http_app()
        required = self.required_header
        seen = self.seen_headers

        async def guarded(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] == "http":
                headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
                seen.append(headers)
                if required and headers.get(required[0].lower()) != required[1]:
                    await send({"type": "http.response.start", "status": 401, "headers": []})
                    await send({"type": "http.response.body", "body": b"unauthorized"})
                    return
            await app(scope, receive, send)

        return guarded

    def start(self) -> HttpMcpServer:
        config = uvicorn.Config(self._app(), host="127.0.0.1", port=self.port, log_level="warning", lifespan="on")
        self._server = uvicorn.Server(config)
        self._server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign]
        self._thread = threading.Thread(target=self._server.run, name=f"mcp-test-{self.port}", daemon=True)
        self._thread.start()
        for _ in range(1000):
            if self._server.started:
                return self
            if not self._thread.is_alive():
                break
            threading.Event().wait(0.01)
        raise RuntimeError("the test MCP server did not start")

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=10)
            self._server = None

    def __enter__(self) -> HttpMcpServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
