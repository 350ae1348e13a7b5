"""The schema of an OpenAI ``POST /v1/responses`` body (and of conversation
items), as pydantic v2 models, following OpenAI's Responses API reference and
the Open Responses ``CreateResponseBody``.

Strict types as in gateway/openai/chat_schema.py (the same ``param`` naming
on a 400). Unknown top-level fields are kept and forwarded as ``extra_body``;
unknown keys inside items are ignored (SDKs resend output items, which carry
``id`` and ``status``).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag

from gateway.openai.chat_schema import JsonObject, PositiveInt64, struct_value

__all__ = ["ResponseRequest", "Item", "ItemsRequest", "FIELD_NAMES", "struct_value"]


class _Model(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")


class InputText(_Model):
    type: Literal["input_text", "output_text", "text"]
    text: str


class InputImage(_Model):
    type: Literal["input_image"]
    image_url: str | None = None
    file_id: str | None = None
    detail: Literal["auto", "low", "high"] | None = None


class InputFile(_Model):
    type: Literal["input_file"]
    file_id: str | None = None
    filename: str | None = None
    file_data: str | None = None
    file_url: str | None = None


class Refusal(_Model):
    type: Literal["refusal"]
    refusal: str


Part = Annotated[InputText | InputImage | InputFile | Refusal, Field(discriminator="type")]


class MessageItem(_Model):
    type: Literal["message"] = "message"
    role: Literal["user", "assistant", "system", "developer"]
    content: str | list[Part]


class FunctionCallItem(_Model):
    type: Literal["function_call"]
    call_id: str = Field(min_length=1)
    name: str = Field(min_length=1)
    arguments: str


class FunctionCallOutputItem(_Model):
    type: Literal["function_call_output"]
    call_id: str = Field(min_length=1, max_length=256)
    output: str | list[Part]


class McpApprovalResponseItem(_Model):
    type: Literal["mcp_approval_response"]
    approval_request_id: str = Field(min_length=1)
    approve: bool
    reason: str | None = None


class ReasoningItem(_Model):
    """A resent reasoning item: kept by the server already, so ignored."""

    type: Literal["reasoning"]


class ItemReference(_Model):
    type: Literal["item_reference"]
    id: str


def _item_tag(value: Any) -> str:
    if isinstance(value, dict):
        return str(value.get("type") or "message")
    return str(getattr(value, "type", "message"))


Item = Annotated[
    Annotated[MessageItem, Tag("message")]
    | Annotated[FunctionCallItem, Tag("function_call")]
    | Annotated[FunctionCallOutputItem, Tag("function_call_output")]
    | Annotated[McpApprovalResponseItem, Tag("mcp_approval_response")]
    | Annotated[ReasoningItem, Tag("reasoning")]
    | Annotated[ItemReference, Tag("item_reference")],
    Discriminator(_item_tag),
]


class FunctionTool(_Model):
    type: Literal["function"]
    name: str = Field(min_length=1, max_length=64, pattern=r"^[a-zA-Z0-9_-]+$")
    description: str | None = None
    parameters: JsonObject | None = None
    strict: bool | None = None


class McpTool(_Model):
    type: Literal["mcp"]
    server_label: str = Field(min_length=1)
    server_url: str | None = None
    allowed_tools: list[str] | dict[str, Any] | None = None
    require_approval: str | dict[str, Any] | None = None
    headers: dict[str, str] | None = None


Tool = Annotated[FunctionTool | McpTool, Field(discriminator="type")]


class NamedFunction(_Model):
    type: Literal["function"]
    name: str


class TextFormat(_Model):
    type: Literal["text", "json_object", "json_schema"]
    name: str | None = Field(default=None, max_length=64)
    description: str | None = None
    schema_: JsonObject | None = Field(default=None, alias="schema")
    strict: bool | None = None


class TextParam(_Model):
    format: TextFormat | None = None
    verbosity: Literal["low", "medium", "high"] | None = None


class ReasoningParam(_Model):
    effort: Literal["none", "minimal", "low", "medium", "high", "xhigh"] | None = None
    summary: Literal["auto", "concise", "detailed"] | None = None


class ConversationRef(_Model):
    id: str


class StreamOptions(_Model):
    include_obfuscation: bool | None = None


class ResponseRequest(_Model):
    """``POST /v1/responses``; unknown top-level fields go upstream as ``extra_body``."""

    model_config = ConfigDict(strict=True, extra="allow", populate_by_name=True)

    model: str | None = None
    input: str | list[Item] | None = None
    instructions: str | None = None
    tools: list[Tool] | None = Field(default=None, max_length=128)
    tool_choice: Literal["none", "auto", "required"] | NamedFunction | None = None
    parallel_tool_calls: bool | None = None
    text: TextParam | None = None
    reasoning: ReasoningParam | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    max_output_tokens: PositiveInt64 | None = None
    max_tool_calls: PositiveInt64 | None = None
    metadata: dict[str, Annotated[str, Field(max_length=512)]] | None = Field(default=None, max_length=16)
    previous_response_id: str | None = None
    conversation: str | ConversationRef | None = None
    store: bool | None = None
    background: bool | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    truncation: Literal["auto", "disabled"] | None = None
    user: str | None = None
    safety_identifier: str | None = None
    prompt_cache_key: str | None = None
    service_tier: str | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    include: list[str] | None = None


class ItemsRequest(_Model):
    """``POST /v1/conversations/{id}/items``: up to 20 items."""

    items: list[Item] = Field(min_length=1, max_length=20)


class ConversationRequest(_Model):
    """``POST /v1/conversations`` (create, with up to 20 items) and its update (metadata)."""

    items: list[Item] | None = Field(default=None, max_length=20)
    metadata: dict[str, Annotated[str, Field(max_length=512)]] | None = Field(default=None, max_length=16)


FIELD_NAMES = frozenset(
    field.alias or name
    for model in (
        InputText,
        InputImage,
        InputFile,
        Refusal,
        MessageItem,
        FunctionCallItem,
        FunctionCallOutputItem,
        McpApprovalResponseItem,
        FunctionTool,
        McpTool,
        NamedFunction,
        TextFormat,
        TextParam,
        ReasoningParam,
        ConversationRef,
        ResponseRequest,
        ItemsRequest,
        ConversationRequest,
    )
    for name, field in model.model_fields.items()
)
