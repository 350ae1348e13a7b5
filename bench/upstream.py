"""The bench's scripted OpenAI-compatible upstream, run in its own process.

    python -m bench.upstream [--port 0] [--pace-ms 20] [--deltas 64]

Prints ``listening <port>`` once it accepts connections. Plain asyncio and a
hand-written HTTP/1.1 parser (keep-alive, Content-Length requests, chunked
responses), so that one upstream process can pace thousands of deltas a second
without becoming the bottleneck of the arms it feeds. The model name selects
the script (it passes unchanged through LiteLLM's wildcard route and through
agentapi's session settings):

``paced`` / ``paced-N``  N deltas (default ``--deltas``) at a ``--pace-ms`` pace:
                         delta k is written at t0 + k * pace, t0 being the
                         request's arrival, so the first comes at once and
                         lateness never accumulates.
``late`` / ``late-N``    as ``paced-N``, but delta k at t0 + (k + 1) * pace:
                         the first token takes one pace, as a real model's takes time.
``instant``              every delta in one write (``stream: true``), or an
                         instant ``chat.completion`` (``stream: false``).
``hold``                 the role chunk, then nothing until ``POST /_release``
                         (or 120 s): an idle open stream, for memory figures.
``tool-N``               when the request offers tools and its last message is
                         not a tool result: one call of the first tool (arguments
                         ``{"text": "bench"}``) at once, finish ``tool_calls``;
                         otherwise as ``instant-N``. A two-step run, for the
                         cost of a server-side step (bench/steps.py).

Every stream starts with OpenAI's role chunk and ends with a finish chunk, a
usage chunk when ``stream_options.include_usage`` is set, then ``[DONE]``.
Delta k's content is ``"wk "`` so clients can check that none was lost or
reordered.

``GET /_stats`` answers the open and held streams, the request, connection and
disconnect counts, and how late the paced writes were (p50/p99/max, ms), then resets the
lateness figures: the harness reads it around each measurement window, so a gap
that the upstream itself caused is visible as such.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid

CREATED = 1700000000


class Stats:
    def __init__(self) -> None:
        self.open_streams = 0
        self.requests = 0
        self.disconnects = 0
        self.connections = 0
        self.late: list[float] = []
        self.held: set[Connection] = set()

    def snapshot(self) -> dict[str, object]:
        late = sorted(self.late)
        self.late = []

        def q(p: float) -> float:
            return round(late[min(len(late) - 1, int(len(late) * p))] * 1000, 3) if late else 0.0

        return {
            "open_streams": self.open_streams,
            "held_streams": len(self.held),
            "requests": self.requests,
            "disconnects": self.disconnects,
            "connections": self.connections,
            "paced_writes": len(late),
            "late_ms": {"p50": q(0.5), "p99": q(0.99), "max": round(late[-1] * 1000, 3) if late else 0.0},
        }


def _chunked(payload: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(payload), payload)


def _event(obj: object) -> bytes:
    return _chunked(b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n")


class Connection(asyncio.Protocol):
    """One client connection; requests are served one at a time (no pipelining)."""

    def __init__(self, server: Upstream) -> None:
        self.server = server
        self.stats = server.stats
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.busy = False
        self.closed = False
        self.timer: asyncio.TimerHandle | None = None
        # The stream in progress.
        self.prefix = b""
        self.bare = b""
        self.model = ""
        self.total = 0
        self.sent = 0
        self.t0 = 0.0
        self.usage: dict[str, int] | None = None

    # --- connection events -------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.stats.connections += 1

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.timer is not None:
            self.timer.cancel()
        if self.busy:
            self.stats.disconnects += 1
            self.stats.open_streams -= 1
            self.stats.held.discard(self)
            self.busy = False

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self._serve()

    # --- HTTP ----------------------------------------------------------------
    def _serve(self) -> None:
        while not self.busy and not self.closed:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            lines = bytes(self.buffer[:end]).split(b"\r\n")
            length = 0
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if len(self.buffer) < end + 4 + length:
                return
            body = bytes(self.buffer[end + 4 : end + 4 + length])
            del self.buffer[: end + 4 + length]
            method, path, _ = lines[0].split(b" ", 2)
            self._route(method, path.decode(), body)

    def _reply(self, status: str, obj: object) -> None:
        payload = json.dumps(obj, separators=(",", ":")).encode()
        head = f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {len(payload)}\r\n\r\n"
        assert self.transport is not None
        self.transport.write(head.encode() + payload)

    def _route(self, method: bytes, path: str, body: bytes) -> None:
        if path.startswith("/v1/chat/completions") and method == b"POST":
            self.stats.requests += 1
            self._completion(json.loads(body))
        elif path.startswith("/v1/models") and method == b"GET":
            data = [
                {"id": m, "object": "model", "created": CREATED, "owned_by": "bench"}
                for m in ("paced", "late", "instant", "hold")
            ]
            self._reply("200 OK", {"object": "list", "data": data})
        elif path.startswith("/_stats"):
            self._reply("200 OK", self.stats.snapshot())
        elif path.startswith("/_release") and method == b"POST":
            held = list(self.stats.held)
            for connection in held:
                connection._release()
            self._reply("200 OK", {"released": len(held)})
        elif path in ("/health", "/healthz"):
            self._reply("200 OK", {"status": "ok"})
        else:
            self._reply("404 Not Found", {"error": {"message": f"no route {path}", "type": "invalid_request_error"}})

    # --- completions -----------------------------------------------------------
    def _completion(self, body: dict) -> None:
        model = str(body.get("model") or "paced")
        name, _, count = model.partition("-")
        total = int(count) if count.isdigit() else self.server.deltas
        prompt_tokens = sum(len(str(m.get("content") or "").split()) for m in body.get("messages") or ())
        self.usage = {"prompt_tokens": prompt_tokens, "completion_tokens": total, "total_tokens": prompt_tokens + total}
        cid = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        if not body.get("stream"):
            self._reply(
                "200 OK",
                {
                    "id": cid,
                    "object": "chat.completion",
                    "created": CREATED,
                    "model": model,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": " ".join(f"w{k}" for k in range(total))},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": self.usage,
                },
            )
            return
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        if not include_usage:
            self.usage = None
        usage_field = '"usage":null,' if include_usage else ""
        self.bare = f'{{"id":"{cid}","object":"chat.completion.chunk","created":{CREATED},"model":"{model}",'.encode()
        self.prefix = self.bare + usage_field.encode()
        self.model, self.total, self.sent = model, total, 0
        self.busy = True
        self.stats.open_streams += 1
        assert self.transport is not None
        head = (
            "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
            f"x-request-id: {cid}\r\ntransfer-encoding: chunked\r\n\r\n"
        ).encode()
        role = self._chunk(b'"choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}')
        self.transport.write(head + role)
        self.t0 = self.loop.time()
        messages = body.get("messages") or ()
        if name == "tool" and body.get("tools") and (not messages or messages[-1].get("role") != "tool"):
            function = {"name": body["tools"][0]["function"]["name"], "arguments": '{"text":"bench"}'}
            delta = {"tool_calls": [{"index": 0, "id": "call_bench", "type": "function", "function": function}]}
            choice = json.dumps([{"index": 0, "delta": delta, "finish_reason": None}], separators=(",", ":"))
            self.transport.write(self._chunk(b'"choices":' + choice.encode() + b"}"))
            self.sent = 1
            self._finish(b"tool_calls")
        elif name in ("instant", "tool"):
            self.transport.write(b"".join(self._delta(k) for k in range(total)))
            self.sent = total
            self._finish()
        elif name == "hold":
            self.stats.held.add(self)
            self.timer = self.loop.call_later(120, self._release)
        elif name == "late":
            self.t0 += self.server.pace
            self.timer = self.loop.call_at(self.t0, self._next)
        else:
            self._next()

    def _chunk(self, rest: bytes) -> bytes:
        return _chunked(b"data: " + self.prefix + rest + b"\n\n")

    def _delta(self, k: int) -> bytes:
        return self._chunk(
            b'"choices":[{"index":0,"delta":{"content":"w%d "},"finish_reason":null}]}' % k,
        )

    def _next(self) -> None:
        if self.closed:
            return
        k = self.sent
        self.stats.late.append(self.loop.time() - (self.t0 + k * self.server.pace))
        assert self.transport is not None
        self.transport.write(self._delta(k))
        self.sent = k + 1
        if self.sent < self.total:
            self.timer = self.loop.call_at(self.t0 + self.sent * self.server.pace, self._next)
        else:
            self.timer = None
            self._finish()

    def _release(self) -> None:
        if self.closed or self not in self.stats.held:
            return
        self.stats.held.discard(self)
        if self.timer is not None:
            self.timer.cancel()
        assert self.transport is not None
        self.transport.write(self._delta(0))
        self.sent = 1
        self.usage = self.usage and {**self.usage, "completion_tokens": 1}
        self._finish()

    def _finish(self, reason: bytes = b"stop") -> None:
        assert self.transport is not None
        tail = [self._chunk(b'"choices":[{"index":0,"delta":{},"finish_reason":"%s"}]}' % reason)]
        if self.usage is not None:
            usage = json.dumps(self.usage, separators=(",", ":")).encode()
            tail.append(_chunked(b"data: " + self.bare + b'"choices":[],"usage":' + usage + b"}\n\n"))
        tail.append(_chunked(b"data: [DONE]\n\n") + b"0\r\n\r\n")
        self.transport.write(b"".join(tail))
        self.stats.open_streams -= 1
        self.busy = False
        if self.buffer:
            self._serve()


class Upstream:
    def __init__(self, pace_ms: float, deltas: int) -> None:
        self.pace = pace_ms / 1000
        self.deltas = deltas
        self.stats = Stats()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--pace-ms", type=float, default=20.0)
    parser.add_argument("--deltas", type=int, default=64)
    args = parser.parse_args()
    upstream = Upstream(args.pace_ms, args.deltas)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Connection(upstream), args.host, args.port, backlog=4096)
    print(f"listening {server.sockets[0].getsockname()[1]}", flush=True)
    started = time.monotonic()
    async with server:
        await server.serve_forever()
    print(f"stopped after {time.monotonic() - started:.0f}s", file=sys.stderr)


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
