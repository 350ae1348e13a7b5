"""The schema of an OpenAI ``POST /v1/chat/completions`` body, as pydantic v2 models.

pydantic because it parses and validates in one pass from the raw bytes (its
JSON parser refuses lone surrogates and nesting past 200 levels), checks
types strictly (``max_tokens: true`` is not an integer) and reports every
error with its location, which becomes OpenAI's ``param``. Parameters follow
OpenAI's API reference (ranges included); unknown top-level fields are kept
(``model_extra``) and forwarded as ``extra_body``.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    model_validator,
)

INT64_MAX = 2**63 - 1
# protobuf's Struct holds numbers as doubles, which are exact up to 2**53.
STRUCT_INT_MAX = 2**53
# JSON carried in a protobuf Struct (tool parameters, JSON schemas, extra_body):
# each JSON level is two protobuf levels, and protobuf refuses to parse more than
# 100, so this leaves room for the messages around the Struct.
MAX_STRUCT_DEPTH = 32

Int64 = Annotated[int, Field(ge=-INT64_MAX - 1, le=INT64_MAX)]
PositiveInt64 = Annotated[int, Field(ge=1, le=INT64_MAX)]


def struct_value(value: Any, depth: int = 0) -> Any:
    """``value`` unchanged if a protobuf ``Struct`` can carry it exactly. Raises
    ValueError for nesting past :data:`MAX_STRUCT_DEPTH`, a non-finite number
    or an integer beyond 2**53."""
    if depth > MAX_STRUCT_DEPTH:
        raise ValueError(f"nested deeper than {MAX_STRUCT_DEPTH} levels")
    if isinstance(value, dict):
        for item in value.values():
            struct_value(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            struct_value(item, depth + 1)
    elif isinstance(value, float) and not math.isfinite(value):
        raise ValueError("numbers must be finite")
    elif isinstance(value, int) and not isinstance(value, bool) and abs(value) > STRUCT_INT_MAX:
        raise ValueError(f"integers must be within ±2**53, which JSON numbers carry exactly (got {value})")
    return value


JsonObject = Annotated[dict[str, Any], AfterValidator(struct_value)]


class _Model(BaseModel):
    # Strict: no coercion of "1" to 1 or true to 1; unknown keys are ignored
    # (SDKs resend their own response objects as messages, with extra keys).
    model_config = ConfigDict(strict=True, extra="ignore")


class ImageUrl(_Model):
    url: str
    detail: Literal["auto", "low", "high"] | None = None


class InputAudio(_Model):
    data: str
    format: str


class FileData(_Model):
    file_id: str | None = None
    filename: str | None = None
    file_data: str | None = None

    @model_validator(mode="after")
    def _some(self) -> FileData:
        if not (self.file_id or self.file_data):
            raise ValueError("a file part needs file_id or file_data")
        return self


class TextPart(_Model):
    type: Literal["text"]
    text: str


class ImagePart(_Model):
    type: Literal["image_url"]
    image_url: ImageUrl


class AudioPart(_Model):
    type: Literal["input_audio"]
    input_audio: InputAudio


class FilePart(_Model):
    type: Literal["file"]
    file: FileData


class RefusalPart(_Model):
    """In an assistant message that the caller resends."""

    type: Literal["refusal"]
    refusal: str


def _part_kind(value: Any) -> str | None:
    kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    return f"part:{kind}" if kind in ("text", "image_url", "input_audio", "file", "refusal") else None


# Tags are "part:<type>" so that error locations can drop them (see chat_convert.param_of).
ContentPart = Annotated[
    Annotated[TextPart, Tag("part:text")]
    | Annotated[ImagePart, Tag("part:image_url")]
    | Annotated[AudioPart, Tag("part:input_audio")]
    | Annotated[FilePart, Tag("part:file")]
    | Annotated[RefusalPart, Tag("part:refusal")],
    Discriminator(
        _part_kind,
        custom_error_type="invalid_content_part",
        custom_error_message="content parts are text, image_url, input_audio or file",
    ),
]


class FunctionCall(_Model):
    name: str
    arguments: str


class ToolCall(_Model):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class Message(_Model):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_call_id: str | None = None
    tool_calls: list[ToolCall] | None = None
    refusal: str | None = None


class FunctionDefinition(_Model):
    name: str = Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")
    description: str | None = None
    parameters: JsonObject | None = None
    strict: bool | None = None


class Tool(_Model):
    type: Literal["function"]
    function: FunctionDefinition


class JsonSchemaFormat(_Model):
    name: str = Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")
    description: str | None = None
    schema_: JsonObject | None = Field(None, alias="schema")
    strict: bool | None = None


class ResponseFormat(_Model):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_given(self) -> ResponseFormat:
        if self.type == "json_schema" and self.json_schema is None:
            raise ValueError("response_format of type json_schema needs json_schema")
        return self


class FunctionName(_Model):
    name: str


class NamedToolChoice(_Model):
    type: Literal["function"]
    function: FunctionName


class StreamOptions(_Model):
    include_usage: bool | None = None


class ChatCompletionRequest(_Model):
    """The body; ``model_extra`` holds the unknown top-level fields (checked
    with :func:`struct_value` when they are converted)."""

    model_config = ConfigDict(strict=True, extra="allow")

    model: str | None = None
    messages: list[Message] = Field(min_length=1)
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    max_tokens: PositiveInt64 | None = None
    max_completion_tokens: PositiveInt64 | None = None
    n: int | None = Field(None, ge=1, le=128)
    stop: str | Annotated[list[str], Field(max_length=4)] | None = None
    seed: Int64 | None = None
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    logit_bias: dict[str, Annotated[float, Field(ge=-100, le=100)]] | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=20)
    user: str | None = None
    metadata: dict[str, str] | None = Field(None, max_length=16)
    reasoning_effort: str | None = None
    service_tier: str | None = None
    modalities: list[str] | None = None
    response_format: ResponseFormat | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    tools: list[Tool] | None = None


# Every field name of the models above: error locations keep these, and drop
# union-member labels and discriminator tags (which are not request fields).
FIELD_NAMES = frozenset(
    field.alias or name
    for model in (
        ImageUrl,
        InputAudio,
        FileData,
        TextPart,
        ImagePart,
        AudioPart,
        FilePart,
        RefusalPart,
        FunctionCall,
        ToolCall,
        Message,
        FunctionDefinition,
        Tool,
        JsonSchemaFormat,
        ResponseFormat,
        FunctionName,
        NamedToolChoice,
        StreamOptions,
        ChatCompletionRequest,
    )
    for name, field in model.model_fields.items()
)

__all__ = ["ChatCompletionRequest", "FIELD_NAMES", "ValidationError", "struct_value"]
