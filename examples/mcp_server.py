"""A small MCP server (the official ``mcp`` SDK) to register with agentapi.

    python examples/mcp_server.py --port 8765            # streamable HTTP at http://127.0.0.1:8765/mcp
    python examples/mcp_server.py --port 8765 --api-key s3cret   # requires the header X-Api-Key: s3cret
    python examples/mcp_server.py --stdio                # stdio, for a stdio registration

Its tools: ``add`` (two numbers), ``word_count`` and ``utc_now``.
"""

from __future__ import annotations

import argparse
import datetime

import uvicorn
from mcp.server.mcpserver import MCPServer

mcp = MCPServer("agentapi-example", log_level="WARNING")


@mcp.tool(description="Adds two numbers.")
def add(a: float, b: float) -> float:
    return a + b


@mcp.tool(description="Counts the words of a text.")
def word_count(text: str) -> int:
    return len(text.split())


@mcp.tool(description="The current UTC time, ISO 8601.")
def utc_now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def with_api_key(app, api_key: str):  # type: ignore[no-untyped-def]
    """Answers 401 to any HTTP request without ``X-Api-Key: <api_key>``."""

    async def guarded(scope, receive, send):  # type: ignore[no-untyped-def]
        if scope["type"] == "http" and dict(scope["headers"]).get(b"x-api-key") != api_key.encode():
            await send({"type": "http.response.start", "status": 401, "headers": []})
            await send({"type": "http.response.body", "body": b"missing or wrong X-Api-Key"})
            return
        await app(scope, receive, send)

    return guarded


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--api-key", help="require this X-Api-Key header")
    parser.add_argument("--stdio", action="store_true", help="serve on stdin/stdout instead of HTTP")
    args = parser.parse_args()
    if args.stdio:
        mcp.run("stdio")
        return
    app = mcp.streamable_http_app(host=args.host)
    if args.api_key:
        app = with_api_key(app, args.api_key)
    print(f"MCP server at http://{args.host}:{args.port}/mcp", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
