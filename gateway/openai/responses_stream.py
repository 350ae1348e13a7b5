"""The Responses streaming event machine: a turn's gRPC events in, OpenAI's
typed semantic events out (pure; no I/O).

Each gRPC event maps to a fixed list of Responses events, and the machine
numbers them from 0. The same turn replayed from its event log (StreamTurn
from the start) therefore gives the same events with the same
``sequence_number``s, which is what makes ``starting_after`` work: the
handler replays the whole turn and drops the events up to that number.

Events emitted (all documented by OpenAI and by Open Responses):
``response.created``, ``response.in_progress``, ``response.output_item.added``
/ ``.done``, ``response.content_part.added`` / ``.done``,
``response.output_text.delta`` / ``.done``, ``response.refusal.delta`` /
``.done``, ``response.reasoning.delta`` / ``.done`` (Open Responses' names for
reasoning text), ``response.function_call_arguments.delta`` / ``.done``,
``response.completed`` / ``response.incomplete`` / ``response.failed``, ``error``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from agentapi import v1 as pb
from gateway.openai import responses_convert as convert


@dataclass
class _Open:
    """The item being streamed: reasoning, text or refusal."""

    kind: str
    index: int
    item_id: str
    text: str = ""


@dataclass
class ResponseEvents:
    """The events of one streamed response. ``options`` are the turn's
    TurnOptions (echoed in the response snapshots); ``meta`` the response
    fields the rows do not hold (``instructions``, ``previous_response_id``,
    ``store``, ``background``)."""

    session_id: str
    requested_model: str
    options: pb.TurnOptions
    meta: dict[str, Any] = field(default_factory=dict)
    sequence: int = 0
    reply_id: str = ""
    model: str = ""
    created_at: int = 0
    items: list[dict[str, Any]] = field(default_factory=list)
    _open: _Open | None = None
    _calls: dict[int, int] = field(default_factory=dict)  # a step's call index -> output index
    _mcp: dict[str, int] = field(default_factory=dict)  # a running MCP call's id -> output index
    calls: dict[str, pb.ToolCall] = field(default_factory=dict)  # earlier turns' calls, for decided approvals
    _texts: int = 0
    _reasonings: int = 0
    finished: bool = False

    def _event(self, kind: str, **fields: Any) -> dict[str, Any]:
        event = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return event

    def snapshot(self, reply: pb.Message | None = None) -> dict[str, Any]:
        """The response object as it stands (in progress until ``reply`` ends it)."""
        if reply is None:
            reply = pb.Message(id=self.reply_id, model=self.model, status=pb.MESSAGE_STATUS_IN_PROGRESS)
            reply.options.CopyFrom(self.options)
            usage = None
        else:
            usage = convert.usage(reply)
        return convert.response(
            self.session_id,
            reply,
            [dict(item) for item in self.items],
            usage,
            requested_model=self.requested_model,
            created_at=self.created_at,
            turn_id=self.reply_id,
            **self.meta,
        )

    def event(self, kind: str | None, payload: Any) -> list[dict[str, Any]]:
        """The Responses events for one gRPC event (its oneof name and value)."""
        if kind == "turn_started":
            return self.started(payload)
        if kind == "delta":
            return self.delta(payload)
        if kind == "tool_call_started":
            return self.tool_started(payload)
        if kind == "tool_call_completed":
            return self.tool_completed(payload)
        if kind == "assistant_message":
            return self.final(payload)
        return []

    def started(self, event: pb.TurnStarted) -> list[dict[str, Any]]:
        """``response.created`` and ``response.in_progress``."""
        self.reply_id = event.message_id
        self.model = event.model or self.requested_model
        self.created_at = event.create_time.seconds
        snapshot = self.snapshot()
        return [
            self._event("response.created", response=snapshot),
            self._event("response.in_progress", response=snapshot),
        ]

    # -- items ------------------------------------------------------------- #

    def _add(self, item: dict[str, Any]) -> list[dict[str, Any]]:
        self.items.append(item)
        return [self._event("response.output_item.added", output_index=len(self.items) - 1, item=dict(item))]

    def _close(self, status: str = "completed") -> list[dict[str, Any]]:
        opened, self._open = self._open, None
        if opened is None:
            return []
        where = {"item_id": opened.item_id, "output_index": opened.index}
        if opened.kind == "reasoning":
            part = {"type": "reasoning_text", "text": opened.text}
            self.items[opened.index] = convert.reasoning_item(opened.item_id, opened.text)
            events = [self._event("response.reasoning.done", **where, content_index=0, text=opened.text)]
        elif opened.kind == "refusal":
            part = {"type": "refusal", "refusal": opened.text}
            self.items[opened.index] = convert.message_item(opened.item_id, status, "", opened.text)
            events = [self._event("response.refusal.done", **where, content_index=0, refusal=opened.text)]
        else:
            part = convert.text_part(opened.text)
            self.items[opened.index] = convert.message_item(opened.item_id, status, opened.text)
            events = [self._event("response.output_text.done", **where, content_index=0, text=opened.text, logprobs=[])]
        events.append(self._event("response.content_part.done", **where, content_index=0, part=part))
        events.append(
            self._event("response.output_item.done", output_index=opened.index, item=self.items[opened.index])
        )
        return events

    def _ensure(self, kind: str) -> list[dict[str, Any]]:
        if self._open is not None and self._open.kind == kind:
            return []
        if self._open is not None and {self._open.kind, kind} == {"text", "refusal"}:
            return []  # one message item holds the text or the refusal
        events = self._close()
        if kind == "reasoning":
            self._reasonings += 1
            item_id = convert.reasoning_item_id(self.reply_id, self._reasonings)
            item = {"type": "reasoning", "id": item_id, "summary": [], "content": []}
            part: dict[str, Any] = {"type": "reasoning_text", "text": ""}
        else:
            self._texts += 1
            item_id = convert.message_item_id(self.reply_id, self._texts)
            item = {"type": "message", "id": item_id, "status": "in_progress", "role": "assistant", "content": []}
            part = {"type": "refusal", "refusal": ""} if kind == "refusal" else convert.text_part("")
        events += self._add(item)
        self._open = _Open(kind, len(self.items) - 1, item_id)
        where = {"item_id": item_id, "output_index": self._open.index}
        events.append(self._event("response.content_part.added", **where, content_index=0, part=part))
        return events

    def delta(self, delta: pb.Delta) -> list[dict[str, Any]]:
        """Reasoning, text, refusal and client tool-call fragments."""
        events: list[dict[str, Any]] = []
        for kind, text, name in (
            ("reasoning", delta.reasoning, "response.reasoning.delta"),
            ("text", delta.content, "response.output_text.delta"),
            ("refusal", delta.refusal, "response.refusal.delta"),
        ):
            if not text:
                continue
            events += self._ensure(kind)
            assert self._open is not None
            self._open.text += text
            where = {"item_id": self._open.item_id, "output_index": self._open.index, "content_index": 0}
            extra = {"logprobs": []} if kind == "text" else {}
            events.append(self._event(name, **where, delta=text, **extra))
        for fragment in delta.tool_calls:
            if fragment.index not in self._calls:
                events += self._close()
                item = convert.function_call_item(fragment.id, fragment.name, "", "in_progress")
                events += self._add(item)
                self._calls[fragment.index] = len(self.items) - 1
            index = self._calls[fragment.index]
            if fragment.arguments:
                self.items[index]["arguments"] += fragment.arguments
                item_id = self.items[index]["id"]
                events.append(
                    self._event(
                        "response.function_call_arguments.delta",
                        item_id=item_id,
                        output_index=index,
                        delta=fragment.arguments,
                    )
                )
        return events

    def _close_calls(self, calls: Any = ()) -> list[dict[str, Any]]:
        events = []
        final = {c.id: c for c in calls}
        for index in self._calls.values():
            item = self.items[index]
            if item["call_id"] in final:
                item["arguments"] = final[item["call_id"]].function.arguments
            item["status"] = "completed"
            where = {"item_id": item["id"], "output_index": index}
            events.append(self._event("response.function_call_arguments.done", **where, arguments=item["arguments"]))
            events.append(self._event("response.output_item.done", output_index=index, item=dict(item)))
        self._calls = {}
        return events

    def tool_started(self, event: pb.ToolCallStarted) -> list[dict[str, Any]]:
        """A server tool call: its ``function_call`` item, whole; on an MCP
        server, its ``mcp_call`` item (done when the call ends)."""
        events = self._close() + self._close_calls()
        if convert.is_mcp(event.executor):
            item = convert.mcp_call_item(event.tool_call_id, event.executor, event.name, event.arguments, None)
            events += self._add(item)
            self._mcp[event.tool_call_id] = len(self.items) - 1
            return events
        events += self._add(convert.function_call_item(event.tool_call_id, event.name, event.arguments, "in_progress"))
        index = len(self.items) - 1
        self.items[index]["status"] = "completed"
        where = {"item_id": self.items[index]["id"], "output_index": index}
        events.append(self._event("response.function_call_arguments.done", **where, arguments=event.arguments))
        events.append(self._event("response.output_item.done", output_index=index, item=dict(self.items[index])))
        return events

    def tool_completed(self, message: pb.Message) -> list[dict[str, Any]]:
        """A server tool call's result: its ``function_call_output`` item, or
        its ``mcp_call`` item done."""
        if message.tool_call_id in self._mcp:
            index = self._mcp.pop(message.tool_call_id)
            item = self.items[index]
            failed = message.status == pb.MESSAGE_STATUS_FAILED
            self.items[index] = item = convert.mcp_call_item(
                message.tool_call_id,
                message.executor,
                item["name"],
                item["arguments"],
                message.content,
                failed,
            )
            return [self._event("response.output_item.done", output_index=index, item=dict(item))]
        call = self.calls.get(message.tool_call_id)
        if convert.is_mcp(message.executor) and call is not None:  # a denied call: it never started
            failed = message.status == pb.MESSAGE_STATUS_FAILED
            item = convert.mcp_call_item(
                call.id, message.executor, call.function.name, call.function.arguments, message.content, failed
            )
            events = self._add(item)
            events.append(self._event("response.output_item.done", output_index=len(self.items) - 1, item=dict(item)))
            return events
        item = convert.function_output_item(message.tool_call_id, message.content)
        events = self._add(item)
        events.append(self._event("response.output_item.done", output_index=len(self.items) - 1, item=dict(item)))
        return events

    def final(self, reply: pb.Message) -> list[dict[str, Any]]:
        """Closes the open items and ends with the terminal event."""
        if not self.reply_id:
            self.reply_id, self.model = reply.id, reply.model or self.model
        state = convert.status(reply)
        events = self._close("completed" if state == "completed" else "incomplete")
        events += self._close_calls(reply.tool_calls)
        for call in reply.tool_calls:
            if call.awaiting_approval and convert.is_mcp(call.executor):
                item = convert.mcp_approval_request_item(
                    call.id, call.executor, call.function.name, call.function.arguments
                )
                events += self._add(item)
                events.append(self._event("response.output_item.done", output_index=len(self.items) - 1, item=item))
        kind = {"completed": "response.completed", "incomplete": "response.incomplete"}.get(state, "response.failed")
        events.append(self._event(kind, response=self.snapshot(reply)))
        self.finished = True
        return events

    def error(self, body: dict[str, Any]) -> dict[str, Any]:
        """An ``error`` event for an OpenAI error body."""
        detail = body["error"]
        payload = {
            "type": detail.get("type") or "server_error",
            "code": detail.get("code"),
            "message": detail.get("message") or "",
            "param": detail.get("param"),
        }
        return self._event("error", error=payload)
