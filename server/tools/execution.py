"""Runs one server-side tool call within its bounds: a timeout, an output size,
and arguments that must be a JSON object. Whatever happens, the result is a
:class:`ToolOutcome` the model can read; nothing here raises but cancellation."""

from __future__ import annotations

import asyncio
import json
import logging

from server.tools.base import TOOL_FAILED, TOOL_TIMEOUT, ToolExecutor, ToolFailure, ToolOutcome

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 30.0
DEFAULT_MAX_OUTPUT_BYTES = 64 * 1024


def truncate(output: str, max_bytes: int) -> str:
    """``output`` cut to ``max_bytes`` of UTF-8, with a marker the model can see."""
    data = output.encode()
    if len(data) <= max_bytes:
        return output
    kept = data[:max_bytes].decode(errors="ignore")
    return f"{kept}\n[output truncated: {max_bytes} of {len(data)} bytes]"


async def execute(
    executor: ToolExecutor,
    name: str,
    arguments: str,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES,
) -> ToolOutcome:
    """Runs ``executor.call(name, <arguments parsed>)``.

    Args:
        executor: the built-in registry or an MCP server's adapter.
        name: the tool's name as the executor knows it (no prefix).
        arguments: the model's arguments JSON text.
        timeout_s: seconds before the call is cancelled (TOOL_TIMEOUT).
        max_output_bytes: longer output is truncated with a marker.

    Returns:
        A completed outcome, or a failed one (TOOL_FAILED for bad arguments
        or an error of the tool, TOOL_TIMEOUT, or the executor's reason).
    """
    try:
        parsed = json.loads(arguments or "{}")
    except ValueError:
        parsed = None
    if not isinstance(parsed, dict):
        return ToolOutcome.failed(TOOL_FAILED, "the arguments are not a JSON object")
    try:
        async with asyncio.timeout(timeout_s):
            output = await executor.call(name, parsed)
    except TimeoutError:
        return ToolOutcome.failed(TOOL_TIMEOUT, f"the tool did not answer within {timeout_s:g} s")
    except ToolFailure as exc:
        return ToolOutcome.failed(exc.reason, exc.message)
    except Exception:  # a tool's bug must reach the model as a failure, not end the run
        log.exception("built-in or MCP tool %r raised", name)
        return ToolOutcome.failed(TOOL_FAILED, "the tool raised an error")
    return ToolOutcome(output=truncate(str(output), max_output_bytes))
