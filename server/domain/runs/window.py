"""What of a session goes into a turn's prompt: the settings merged for the
turn, and the stored history windowed to the token budget."""

from __future__ import annotations

from dataclasses import replace

from server.domain.catalog import Catalog
from server.domain.errors import AgentAPIError
from server.domain.history import count_text, count_tools, window
from server.domain.quota import DEFAULT_OUTPUT_RESERVE
from server.domain.runs.messages import in_prompt
from server.domain.runs.options import TurnOptions
from server.domain.sessions import Settings
from server.store.models import MessageRow


def merge(settings: Settings, options: TurnOptions) -> Settings:
    """The session's effective settings with the turn's model, tools,
    temperature and max output tokens over them."""
    return replace(
        settings,
        model=options.model or settings.model,
        tools=settings.tools if options.tools is None else options.tools,
        temperature=options.temperature if options.temperature is not None else settings.temperature,
        max_output_tokens=options.max_output_tokens or settings.max_output_tokens,
    )


async def prompt_window(
    catalog: Catalog, history: list[MessageRow], rows: list[MessageRow], settings: Settings, reserve: int | None
) -> list[MessageRow]:
    """The stored history that goes into the prompt: finished messages, the
    newest whole groups within the history budget (the session's
    ``history_token_budget``, else the model's context window less the
    output reserve, the system prompt, the tools and the new inputs).
    Raises INVALID_ARGUMENT (CONTEXT_WINDOW_EXCEEDED) when the inputs alone
    overflow the context window."""
    usable = [m for m in history if in_prompt(m)]
    if settings.history_token_budget is not None:
        return usable[window(usable, settings.history_token_budget) :]
    info = await catalog.find(settings.model)
    if info is None or not info.context_window:
        return usable
    fixed = (
        count_text(settings.system_prompt, settings.model)
        + count_tools(settings.tools, settings.model)
        + sum(r.token_count for r in rows)
        + (reserve or settings.max_output_tokens or DEFAULT_OUTPUT_RESERVE)
    )
    budget = info.context_window - fixed
    if budget < 0:
        raise AgentAPIError(
            "INVALID_ARGUMENT",
            "CONTEXT_WINDOW_EXCEEDED",
            f"the new messages need about {fixed} tokens with the output reserve; "
            f"model {settings.model!r} takes {info.context_window}",
            {"model": settings.model, "context_window": str(info.context_window)},
        )
    return usable[window(usable, budget) :]
