"""The load generator: one client loop for every arm.

* HTTP arms (A direct, B LiteLLM, D the bridge) use a small asyncio HTTP/1.1
  client with keep-alive pools and an incremental SSE parser: every byte is
  time-stamped when the event loop hands it over (``data_received``), and the
  client costs a few microseconds per event, so it is not what limits an arm.
* gRPC arms (C, C') use the generated stubs over one ``grpc.aio`` channel per
  agentapi process, as any Python caller would; a ``--workers N`` process gets
  4·N channels, used round robin, since the kernel hands each connection to one worker.
* Every turn is a :class:`Turn`: send time, arrival time of each content delta,
  end time, and whether every delta arrived, in order (the upstream numbers its
  deltas ``w0 w1 ...``; gRPC deltas also carry ``sequence_number``).
* ``closed_loop`` keeps N turns in flight (throughput, capacity);
  ``open_loop`` starts turns at a fixed arrival rate whatever the answers do
  (latency under load).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from tenacity import AsyncRetrying, retry_if_exception, stop_after_delay, wait_random_exponential

from agentapi import v1 as pb

PROMPT = "Write sixty-four words about benchmarks."
perf = time.perf_counter


def expected_deltas(model: str, default: int = 64) -> int:
    """How many content deltas the bench upstream sends for ``model``."""
    name, _, count = model.partition("-")
    if name == "hold":
        return 1
    return int(count) if count.isdigit() else default


class Turn:
    """One request/turn as the client saw it; times are ``perf_counter`` seconds."""

    __slots__ = ("sent", "first", "last", "end", "n", "gaps", "in_order", "error", "expected")

    def __init__(self, expected: int) -> None:
        self.sent = 0.0
        self.first: float | None = None
        self.last = 0.0
        self.end: float | None = None
        self.n = 0
        self.gaps: list[float] = []
        self.in_order = True
        self.error = ""
        self.expected = expected

    def delta(self, now: float, content: str, sequence: int | None = None) -> None:
        if self.first is None:
            self.first = now
        else:
            self.gaps.append(now - self.last)
        self.last = now
        if content != f"w{self.n} " or (sequence is not None and sequence != self.n + 1):
            self.in_order = False
        self.n += 1

    @property
    def ok(self) -> bool:
        return not self.error and self.end is not None and self.in_order and self.n == self.expected

    @property
    def ttft(self) -> float | None:
        return None if self.first is None else self.first - self.sent

    @property
    def e2e(self) -> float | None:
        return None if self.end is None else self.end - self.sent

    @property
    def max_gap(self) -> float:
        return max(self.gaps, default=0.0)


# --------------------------------------------------------------------------- #
# HTTP/1.1 + SSE client
# --------------------------------------------------------------------------- #


class _HttpConnection(asyncio.Protocol):
    HEAD, LENGTH, CHUNKED = 0, 1, 2

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.buffer = bytearray()
        self.sse = bytearray()
        self.body = bytearray()
        self.state = self.HEAD
        self.remaining = 0
        self.status = 0
        self.keep_alive = True
        self.is_sse = False
        self.turn: Turn | None = None
        self.future: asyncio.Future[None] | None = None
        self.done_marker = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.future is not None and not self.future.done():
            self.future.set_exception(ConnectionError(f"connection lost: {exc}"))

    def send(self, request: bytes, turn: Turn) -> asyncio.Future[None]:
        self.turn = turn
        self.future = asyncio.get_running_loop().create_future()
        self.state, self.status, self.done_marker = self.HEAD, 0, False
        self.buffer.clear()
        self.sse.clear()
        self.body.clear()
        assert self.transport is not None
        turn.sent = perf()
        self.transport.write(request)
        return self.future

    def data_received(self, data: bytes) -> None:
        now = perf()
        self.buffer += data
        try:
            self._parse(now)
        except Exception as exc:  # a malformed answer fails the turn, not the harness
            self._finish(f"parse error: {exc!r}")
            if self.transport is not None:
                self.transport.close()

    def _parse(self, now: float) -> None:
        buffer = self.buffer
        while True:
            if self.state == self.HEAD:
                end = buffer.find(b"\r\n\r\n")
                if end < 0:
                    return
                lines = bytes(buffer[:end]).split(b"\r\n")
                del buffer[: end + 4]
                self.status = int(lines[0].split(b" ", 2)[1])
                headers = {}
                for line in lines[1:]:
                    name, _, value = line.partition(b":")
                    headers[name.strip().lower()] = value.strip().lower()
                self.keep_alive = headers.get(b"connection") != b"close"
                self.is_sse = headers.get(b"content-type", b"").startswith(b"text/event-stream")
                if headers.get(b"transfer-encoding") == b"chunked":
                    self.state = self.CHUNKED
                    self.remaining = -1
                else:
                    self.state = self.LENGTH
                    self.remaining = int(headers.get(b"content-length", b"0"))
            elif self.state == self.LENGTH:
                if len(buffer) < self.remaining:
                    return
                self.body += buffer[: self.remaining]
                del buffer[: self.remaining]
                self._complete(now)
                return
            else:
                if self.remaining < 0:
                    line_end = buffer.find(b"\r\n")
                    if line_end < 0:
                        return
                    size = int(bytes(buffer[:line_end]).split(b";")[0], 16)
                    if size == 0:
                        if len(buffer) < line_end + 4:
                            return
                        del buffer[: line_end + 4]
                        self._complete(now)
                        return
                    del buffer[: line_end + 2]
                    self.remaining = size
                if len(buffer) < self.remaining + 2:
                    return
                payload = bytes(buffer[: self.remaining])
                del buffer[: self.remaining + 2]
                self.remaining = -1
                if self.status == 200 and self.is_sse:
                    self._sse(payload, now)
                else:
                    self.body += payload

    def _sse(self, payload: bytes, now: float) -> None:
        if b"\r" in payload:
            payload = payload.replace(b"\r\n", b"\n")
        self.sse += payload
        while (end := self.sse.find(b"\n\n")) >= 0:
            event = bytes(self.sse[:end])
            del self.sse[: end + 2]
            for line in event.split(b"\n"):
                if not line.startswith(b"data:"):
                    continue
                data = line[5:].strip()
                if data == b"[DONE]":
                    self.done_marker = True
                elif data:
                    self._event(json.loads(data), now)

    def _event(self, payload: dict[str, Any], now: float) -> None:
        turn = self.turn
        assert turn is not None
        if "error" in payload:
            turn.error = turn.error or f"stream error: {str(payload['error'])[:200]}"
            return
        choices = payload.get("choices")
        if choices:
            content = (choices[0].get("delta") or {}).get("content")
            if content:
                turn.delta(now, content)

    def _complete(self, now: float) -> None:
        turn = self.turn
        assert turn is not None
        if self.status != 200:
            self._finish(f"HTTP {self.status}: {bytes(self.body[:300]).decode(errors='replace')}")
            return
        if self.body:  # a non-streamed completion
            reply = json.loads(self.body)
            content = reply["choices"][0]["message"]["content"] or ""
            words = content.split()
            turn.first = now
            turn.n = len(words)
            turn.in_order = all(w == f"w{k}" for k, w in enumerate(words))
        elif not self.done_marker:
            turn.error = turn.error or "stream ended without [DONE]"
        turn.end = now
        self._finish("")

    def _finish(self, error: str) -> None:
        if self.turn is not None and error:
            self.turn.error = self.turn.error or error
        if self.future is not None and not self.future.done():
            self.future.set_result(None)


class HttpClient:
    """Keep-alive connection pool to one ``host:port``; one request per connection at a time."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.idle: deque[_HttpConnection] = deque()

    async def _connection(self) -> _HttpConnection:
        while self.idle:
            connection = self.idle.pop()
            if not connection.closed:
                return connection
        _, protocol = await asyncio.get_running_loop().create_connection(_HttpConnection, self.host, self.port)
        return protocol

    def request_bytes(self, path: str, body: dict[str, Any], headers: dict[str, str]) -> bytes:
        payload = json.dumps(body, separators=(",", ":")).encode()
        lines = [f"POST {path} HTTP/1.1", f"host: {self.host}:{self.port}", "content-type: application/json"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        lines.append(f"content-length: {len(payload)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + payload

    async def run(self, request: bytes, turn: Turn) -> Turn:
        connection = None
        try:
            connection = await self._connection()
            await connection.send(request, turn)
            if connection.keep_alive and not connection.closed and not connection.buffer:
                self.idle.append(connection)
            elif connection.transport is not None:
                connection.transport.close()
        except asyncio.CancelledError:
            if connection is not None and connection.transport is not None:
                connection.transport.close()  # the caller gave up: hang up, as a client would
            raise
        except Exception as exc:
            turn.error = turn.error or f"{type(exc).__name__}: {exc}"
        return turn

    def close(self) -> None:
        while self.idle:
            connection = self.idle.pop()
            if connection.transport is not None:
                connection.transport.close()


# --------------------------------------------------------------------------- #
# agentapi sessions
# --------------------------------------------------------------------------- #


def _unavailable(exc: BaseException) -> bool:
    return isinstance(exc, grpc.aio.AioRpcError) and exc.code() == grpc.StatusCode.UNAVAILABLE


class SessionPool:
    """Sessions of one agentapi process for one model. A session serves one turn
    at a time and is retired after ``uses`` turns, so prompts carry a short,
    realistic history (up to ``2 * (uses - 1)`` earlier messages) that does not
    grow through the run. Sessions are created ahead of a measurement with
    :meth:`fill`; ``created_late`` counts those made during one."""

    def __init__(self, stub: pb.SessionServiceStub, metadata: Sequence[tuple[str, str]], model: str, uses: int):
        self.stub, self.metadata, self.model, self.uses = stub, tuple(metadata), model, uses
        self.free: deque[list[Any]] = deque()
        self.created_late = 0

    async def _create(self) -> list[Any]:
        """Creates a session, retrying UNAVAILABLE for up to a minute as a client
        should: an arm overloaded by the phase before (SQLite at 100 open-loop
        streams) can still be draining its backlog when the next phase begins."""
        request = pb.CreateSessionRequest(session=pb.Session(overrides=pb.SessionSettings(model=self.model)))
        async for attempt in AsyncRetrying(
            retry=retry_if_exception(_unavailable),
            wait=wait_random_exponential(multiplier=0.2, max=5),
            stop=stop_after_delay(60),
            reraise=True,
        ):
            with attempt:
                created = await self.stub.CreateSession(request, metadata=self.metadata)
        return [created.session.id, self.uses]

    async def fill(self, count: int, parallel: int = 8) -> None:
        missing = count - len(self.free)
        if missing <= 0:
            return
        gate = asyncio.Semaphore(parallel)

        async def one() -> None:
            async with gate:
                self.free.append(await self._create())

        await asyncio.gather(*(one() for _ in range(missing)))

    async def take(self) -> list[Any]:
        if self.free:
            return self.free.popleft()
        self.created_late += 1
        return await self._create()

    def give(self, entry: list[Any], ok: bool) -> None:
        entry[1] -= 1
        if ok and entry[1] > 0:
            self.free.append(entry)


# --------------------------------------------------------------------------- #
# Arms
# --------------------------------------------------------------------------- #


@dataclass
class Arm:
    """One path from the client to the upstream. ``process`` names the process
    under test (for CPU and memory figures); ``db`` is sqlite, mariadb or None."""

    name: str
    path: str
    process: str
    db: str | None = None
    uses_sessions: bool = False

    async def stream(self, model: str) -> Turn:
        raise NotImplementedError

    async def unary(self, model: str) -> Turn:
        raise NotImplementedError

    async def prepare(self, model: str, turns: int) -> None:
        """Creates the sessions ``turns`` turns of ``model`` will need."""

    def close(self) -> None:
        pass


@dataclass
class OpenAIArm(Arm):
    """POST /v1/chat/completions to an OpenAI-compatible server (A, B)."""

    host: str = "127.0.0.1"
    port: int = 0
    api_key: str = ""
    client: HttpClient | None = None
    _requests: dict[tuple[str, bool], bytes] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.client = HttpClient(self.host, self.port)

    def _request(self, model: str, stream: bool) -> bytes:
        key = (model, stream)
        if key not in self._requests:
            assert self.client is not None
            body = {"model": model, "stream": stream, "messages": [{"role": "user", "content": PROMPT}]}
            self._requests[key] = self.client.request_bytes(
                "/v1/chat/completions", body, {"authorization": f"Bearer {self.api_key}"}
            )
        return self._requests[key]

    async def stream(self, model: str) -> Turn:
        assert self.client is not None
        return await self.client.run(self._request(model, True), Turn(expected_deltas(model)))

    async def unary(self, model: str) -> Turn:
        assert self.client is not None
        return await self.client.run(self._request(model, False), Turn(expected_deltas(model)))

    def close(self) -> None:
        if self.client is not None:
            self.client.close()


class AgentapiProcess:
    """Client side of one running agentapi: a gRPC channel and session pools."""

    def __init__(
        self, name: str, grpc_port: int, http_port: int, master_key: str, uses: int, channels: int = 1
    ) -> None:
        self.name, self.grpc_port, self.http_port = name, grpc_port, http_port
        self.metadata = (("authorization", f"Bearer {master_key}"),)
        self.master_key = master_key
        self.uses = uses
        # One channel is one HTTP/2 connection, and with ``--workers`` the kernel gives each
        # connection to one worker: a workers arm needs several, each with its own subchannel
        # (grpc would otherwise share one connection between channels to the same target).
        options = [("grpc.use_local_subchannel_pool", 1)] if channels > 1 else []
        self.channels = [grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}", options=options) for _ in range(channels)]
        self._stubs = itertools.cycle([pb.SessionServiceStub(c) for c in self.channels])
        self.pools: dict[str, SessionPool] = {}

    @property
    def stub(self) -> pb.SessionServiceStub:
        """The next channel's stub, round robin."""
        return next(self._stubs)

    def pool(self, model: str) -> SessionPool:
        if model not in self.pools:
            self.pools[model] = SessionPool(self.stub, self.metadata, model, self.uses)
        return self.pools[model]

    async def close(self) -> None:
        for channel in self.channels:
            await channel.close()


@dataclass
class GrpcArm(Arm):
    """agentapi's SendStreamingMessage / SendMessage (C, C')."""

    agentapi: AgentapiProcess | None = None
    uses_sessions: bool = True

    async def prepare(self, model: str, turns: int) -> None:
        assert self.agentapi is not None
        await self.agentapi.pool(model).fill(math.ceil(turns / self.agentapi.uses))

    async def stream(self, model: str) -> Turn:
        assert self.agentapi is not None
        pool = self.agentapi.pool(model)
        turn = Turn(expected_deltas(model))
        entry = await pool.take()
        request = pb.SendStreamingMessageRequest(
            session_id=entry[0], messages=[pb.InputMessage(role=pb.ROLE_USER, content=PROMPT)]
        )
        status = None
        try:
            turn.sent = perf()
            call = self.agentapi.stub.SendStreamingMessage(request, metadata=self.agentapi.metadata)
            async for event in call:
                now = perf()
                kind = event.WhichOneof("event")
                if kind == "delta":
                    if event.delta.content:
                        turn.delta(now, event.delta.content, event.delta.sequence_number)
                elif kind == "assistant_message":
                    status = event.assistant_message.status
            turn.end = perf()
            if status != pb.MESSAGE_STATUS_COMPLETED:
                turn.error = f"final status {status}"
        except grpc.aio.AioRpcError as exc:
            turn.error = f"{exc.code().name}: {exc.details()}"
        except Exception as exc:
            turn.error = f"{type(exc).__name__}: {exc}"
        pool.give(entry, turn.ok)
        return turn

    async def unary(self, model: str) -> Turn:
        assert self.agentapi is not None
        pool = self.agentapi.pool(model)
        turn = Turn(expected_deltas(model))
        entry = await pool.take()
        request = pb.SendMessageRequest(
            session_id=entry[0], messages=[pb.InputMessage(role=pb.ROLE_USER, content=PROMPT)]
        )
        try:
            turn.sent = perf()
            response = await self.agentapi.stub.SendMessage(request, metadata=self.agentapi.metadata)
            turn.end = turn.first = perf()
            words = response.message.content.split()
            turn.n = len(words)
            turn.in_order = all(w == f"w{k}" for k, w in enumerate(words))
            if response.message.status != pb.MESSAGE_STATUS_COMPLETED:
                turn.error = f"final status {response.message.status}"
        except grpc.aio.AioRpcError as exc:
            turn.error = f"{exc.code().name}: {exc.details()}"
        pool.give(entry, turn.ok)
        return turn


@dataclass
class BridgeArm(Arm):
    """agentapi's JSON bridge, POST /v1/chat/completions with X-Session-Id (D)."""

    agentapi: AgentapiProcess | None = None
    uses_sessions: bool = True
    client: HttpClient | None = None

    def __post_init__(self) -> None:
        assert self.agentapi is not None
        self.client = HttpClient("127.0.0.1", self.agentapi.http_port)

    async def prepare(self, model: str, turns: int) -> None:
        assert self.agentapi is not None
        await self.agentapi.pool(model).fill(math.ceil(turns / self.agentapi.uses))

    async def _run(self, model: str, stream: bool) -> Turn:
        assert self.agentapi is not None and self.client is not None
        pool = self.agentapi.pool(model)
        entry = await pool.take()
        body = {"model": model, "stream": stream, "messages": [{"role": "user", "content": PROMPT}]}
        headers = {"authorization": f"Bearer {self.agentapi.master_key}", "x-session-id": entry[0]}
        turn = await self.client.run(
            self.client.request_bytes("/v1/chat/completions", body, headers), Turn(expected_deltas(model))
        )
        pool.give(entry, turn.ok)
        return turn

    async def stream(self, model: str) -> Turn:
        return await self._run(model, True)

    async def unary(self, model: str) -> Turn:
        return await self._run(model, False)

    def close(self) -> None:
        if self.client is not None:
            self.client.close()


# --------------------------------------------------------------------------- #
# Drivers
# --------------------------------------------------------------------------- #


class LoopLag:
    """Samples how late the client's own event loop wakes up (every 5 ms), so a
    result that the load generator itself distorted can be told apart."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            due = perf() + 0.005
            await asyncio.sleep(0.005)
            self.samples.append(perf() - due)

    def start(self) -> None:
        self.samples = []
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> list[float]:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        return self.samples


@dataclass
class Window:
    """The turns of one measurement and the window their figures count in."""

    turns: list[Turn]
    start: float
    stop: float

    @property
    def counted(self) -> list[Turn]:
        """Turns sent inside the window (warm-up and drain excluded)."""
        return [t for t in self.turns if self.start <= t.sent < self.stop]

    @property
    def completed_in_window(self) -> int:
        return sum(1 for t in self.turns if t.ok and t.end is not None and self.start <= t.end < self.stop)


async def closed_loop(turn: Callable[[], Awaitable[Turn]], concurrency: int, ramp: float, duration: float) -> Window:
    """``concurrency`` workers each run turns back to back; their starts are
    spread over ``ramp`` seconds, and the window is the ``duration`` after it."""
    turns: list[Turn] = []
    start = perf()
    window_start, stop = start + ramp, start + ramp + duration

    async def worker(index: int) -> None:
        await asyncio.sleep(ramp * index / concurrency)
        while perf() < stop:
            turns.append(await turn())

    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    return Window(turns, window_start, stop)


async def open_loop(
    turn: Callable[[], Awaitable[Turn]], rate: float, warm: float, duration: float, drain: float
) -> Window:
    """Starts a turn every ``1 / rate`` seconds, on schedule whatever the answers
    do, for ``warm + duration`` seconds; the window is the last ``duration``.
    Turns still running ``drain`` seconds after the last start are cancelled and
    count as failed (an overloaded arm's backlog would otherwise take minutes)."""
    turns: list[Turn] = []
    tasks = []
    start = perf()
    window_start, stop = start + warm, start + warm + duration

    async def one() -> None:
        turns.append(await turn())

    k = 0
    while (due := start + k / rate) < stop:
        delay = due - perf()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one()))
        k += 1
    _, pending = await asyncio.wait(tasks, timeout=drain)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    unfinished = Turn(0)
    unfinished.sent, unfinished.error = window_start, f"unfinished {drain:.0f} s after the last arrival (cancelled)"
    turns.extend(unfinished for _ in pending)
    return Window(turns, window_start, stop)
