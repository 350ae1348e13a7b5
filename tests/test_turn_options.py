"""Per-turn options over gRPC: OpenAI's chat parameters reach the upstream
through the real LiteLLM proxy, are stored with the reply, and are checked
before anything is stored; the offline model honours or refuses them."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator

import grpc
import jsonschema
import pytest
from google.protobuf import struct_pb2

from agentapi import v1 as pb
from tests.helpers import all_messages, create_session, error_reason, field_violations, sent_upstream, user
from tests.stack import AUTH, Stack, start_stack

SCHEMA = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 12},
        "days": {"type": "integer", "minimum": 1},
        "tags": {"type": "array", "items": {"$ref": "#/$defs/Tag"}, "minItems": 2},
        "unit": {"enum": ["C", "F"]},
        "note": {"anyOf": [{"type": "string"}, {"type": "null"}]},
    },
    "required": ["city", "days", "tags", "unit", "note"],
    "additionalProperties": False,
    "$defs": {"Tag": {"type": "object", "properties": {"label": {"type": "string"}}, "required": ["label"]}},
}
WEATHER = pb.Tool(type="function", function=pb.FunctionDefinition(name="get_weather"))
CLOCK = pb.Tool(type="function", function=pb.FunctionDefinition(name="get_time"))


def every_option() -> pb.TurnOptions:
    extra = struct_pb2.Struct()
    extra.update({"top_k": 40, "provider_flag": "on"})
    schema = struct_pb2.Struct()
    schema.update(SCHEMA)
    return pb.TurnOptions(
        temperature=0.3,
        max_output_tokens=200,
        max_completion_tokens=300,
        response_format=pb.ResponseFormat(
            type=pb.RESPONSE_FORMAT_TYPE_JSON_SCHEMA,
            json_schema=pb.JsonSchemaFormat(name="forecast", schema=schema, strict=True),
        ),
        tool_choice=pb.ToolChoice(function_name="get_weather"),
        parallel_tool_calls=False,
        stop=["END", "STOP"],
        seed=7,
        top_p=0.9,
        frequency_penalty=0.5,
        presence_penalty=-0.5,
        logit_bias={"50256": -100},
        logprobs=True,
        top_logprobs=2,
        user="end-user-42",
        reasoning_effort="low",
        service_tier="auto",
        tools=[WEATHER, CLOCK],
        extra_body=extra,
    )


async def turn(
    stack: Stack, session_id: str, text: str, options: pb.TurnOptions
) -> list[pb.SendStreamingMessageResponse]:
    call = stack.sessions.SendStreamingMessage(
        pb.SendStreamingMessageRequest(session_id=session_id, messages=[user(text)], options=options), metadata=AUTH
    )
    return [event async for event in call]


async def test_every_option_reaches_the_upstream_through_litellm_and_is_stored(stack: Stack, upstream: object) -> None:
    session = await create_session(stack, model="scripted-a")
    text = f"options {uuid.uuid4().hex}"
    events = await turn(stack, session.id, text, every_option())
    body = sent_upstream(upstream, text)
    expected = {
        "temperature": 0.3,
        "max_tokens": 200,
        "max_completion_tokens": 300,
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "parallel_tool_calls": False,
        "stop": ["END", "STOP"],
        "seed": 7,
        "top_p": 0.9,
        "frequency_penalty": 0.5,
        "presence_penalty": -0.5,
        "logit_bias": {"50256": -100},
        "logprobs": True,
        "top_logprobs": 2,
        "reasoning_effort": "low",
        "service_tier": "auto",
        "top_k": 40,
        "provider_flag": "on",
    }
    assert {name: body.get(name) for name in expected} == expected
    # LiteLLM keeps `user` for its own end-user tracking; agentapi sent it (see the direct test below).
    assert body["response_format"]["type"] == "json_schema"
    assert body["response_format"]["json_schema"]["name"] == "forecast"
    assert body["response_format"]["json_schema"]["schema"]["properties"]["days"] == {"type": "integer", "minimum": 1}
    assert [t["function"]["name"] for t in body["tools"]] == ["get_weather", "get_time"]

    final = events[-1].assistant_message
    stored = (await all_messages(stack, session.id))[-1]
    assert stored.id == final.id
    for message in (final, stored):  # what the model was asked to obey stays with the reply
        assert message.options.seed == 7 and list(message.options.stop) == ["END", "STOP"]
        assert message.options.max_completion_tokens == 300 and message.options.max_output_tokens == 200
        assert message.options.response_format.json_schema.schema["properties"]["days"]["minimum"] == 1
        assert message.options.tool_choice.function_name == "get_weather"
        assert message.options.extra_body["top_k"] == 40 and message.options.logit_bias["50256"] == -100


@pytest.fixture(scope="module")
async def direct(sqlite_url: str, upstream: object) -> AsyncIterator[Stack]:
    """agentapi straight to the scripted upstream: what agentapi itself sends
    (LiteLLM rewrites some fields: `user`, `metadata`, the developer role)."""
    running = await start_stack(sqlite_url, upstream.base_url, "unused", runner_id="options-direct")
    yield running
    await running.stop()


async def test_user_and_metadata_reach_an_upstream_called_directly(direct: Stack, upstream: object) -> None:
    session = await create_session(direct, model="scripted-a")
    text = f"direct {uuid.uuid4().hex}"
    options = pb.TurnOptions(user="end-user-42", metadata={"ticket": "T-1"}, modalities=["text"])
    await turn(direct, session.id, text, options)
    body = sent_upstream(upstream, text)
    assert (body["user"], body["metadata"], body["modalities"]) == ("end-user-42", {"ticket": "T-1"}, ["text"])


async def test_per_turn_model_and_tools_apply_to_that_turn_only(stack: Stack, upstream: object) -> None:
    session = await create_session(stack, model="scripted-a")
    text = f"switch {uuid.uuid4().hex}"
    events = await turn(stack, session.id, text, pb.TurnOptions(model="scripted-b", tools=[CLOCK]))
    body = sent_upstream(upstream, text)
    assert body["model"] == "scripted-b" and [t["function"]["name"] for t in body["tools"]] == ["get_time"]
    assert events[0].turn_started.model == "scripted-b" and events[-1].assistant_message.model == "scripted-b"
    again = f"back {uuid.uuid4().hex}"
    await turn(stack, session.id, again, pb.TurnOptions())
    assert sent_upstream(upstream, again)["model"] == "scripted-a" and "tools" not in sent_upstream(upstream, again)


@pytest.mark.parametrize(
    ("options", "field"),
    [
        (pb.TurnOptions(n=2), "options.n"),
        (pb.TurnOptions(top_p=1.5), "options.top_p"),
        (pb.TurnOptions(top_logprobs=3), "options.top_logprobs"),
        (pb.TurnOptions(stop=["a", "b", "c", "d", "e"]), "options.stop"),
        (pb.TurnOptions(tool_choice=pb.ToolChoice(function_name="nope"), tools=[WEATHER]), "options.tool_choice"),
        (pb.TurnOptions(tool_choice=pb.ToolChoice(mode=pb.TOOL_CHOICE_MODE_REQUIRED)), "options.tool_choice"),
        (pb.TurnOptions(max_completion_tokens=0), "options.max_completion_tokens"),
        (
            pb.TurnOptions(response_format=pb.ResponseFormat(type=pb.RESPONSE_FORMAT_TYPE_JSON_SCHEMA)),
            "options.response_format.json_schema.name",
        ),
    ],
)
async def test_bad_options_are_refused_before_anything_is_stored(
    offline_stack: Stack, options: pb.TurnOptions, field: str
) -> None:
    session = await create_session(offline_stack, model="agentapi-offline")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await turn(offline_stack, session.id, "hello", options)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in field_violations(caught.value)
    assert await all_messages(offline_stack, session.id) == []


async def test_extra_body_cannot_replace_the_turns_own_fields(offline_stack: Stack) -> None:
    session = await create_session(offline_stack, model="agentapi-offline")
    extra = struct_pb2.Struct()
    extra.update({"messages": [], "model": "other"})
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await turn(offline_stack, session.id, "hello", pb.TurnOptions(extra_body=extra))
    assert set(field_violations(caught.value)) == {"options.extra_body.messages", "options.extra_body.model"}


async def test_the_offline_model_answers_json_valid_against_the_schema(offline_stack: Stack) -> None:
    session = await create_session(offline_stack, model="agentapi-offline")
    options = every_option()
    options.ClearField("logit_bias")
    options.ClearField("tool_choice")
    options.ClearField("tools")
    options.ClearField("stop")
    options.max_output_tokens = 1000
    final = (await turn(offline_stack, session.id, "forecast for Paris", options))[-1].assistant_message
    jsonschema.validate(json.loads(final.content), SCHEMA)
    reply = await turn(
        offline_stack,
        session.id,
        "anything",
        pb.TurnOptions(response_format=pb.ResponseFormat(type=pb.RESPONSE_FORMAT_TYPE_JSON_OBJECT)),
    )
    assert json.loads(reply[-1].assistant_message.content) == {"reply": "You said: anything"}


async def test_the_offline_model_honours_stop_max_tokens_logprobs_and_tool_choice(offline_stack: Stack) -> None:
    session = await create_session(offline_stack, model="agentapi-offline")
    stopped = await turn(offline_stack, session.id, "alpha beta STOP gamma", pb.TurnOptions(stop=["STOP"]))
    assert stopped[-1].assistant_message.content == "You said: alpha beta "
    cut = await turn(offline_stack, session.id, "one two three four five six", pb.TurnOptions(max_completion_tokens=4))
    assert cut[-1].assistant_message.finish_reason == "length"
    assert cut[-1].assistant_message.content == "You said: one "
    scored = await turn(offline_stack, session.id, "sure thing", pb.TurnOptions(logprobs=True, top_logprobs=1))
    deltas = [e.delta for e in scored if e.HasField("delta")]
    assert [lp.token for d in deltas for lp in d.logprobs] == ["You ", "said: ", "sure ", "thing"]
    final = scored[-1].assistant_message
    assert [(lp.token, lp.logprob, lp.bytes) for lp in final.logprobs][0] == ("You ", 0.0, b"You ")
    assert final.logprobs[0].top_logprobs[0].token == "You "
    forced = await turn(
        offline_stack,
        session.id,
        "no tool named here",
        pb.TurnOptions(tools=[WEATHER, CLOCK], tool_choice=pb.ToolChoice(function_name="get_time")),
    )
    assert [c.function.name for c in forced[-1].assistant_message.tool_calls] == ["get_time"]
    answered = offline_stack.sessions.SubmitToolOutputs(
        pb.SubmitToolOutputsRequest(
            session_id=session.id,
            tool_outputs=[pb.ToolOutput(tool_call_id=forced[-1].assistant_message.tool_calls[0].id, output="noon")],
        ),
        metadata=AUTH,
    )
    assert [e async for e in answered][-1].assistant_message.content == "Tool get_time returned: noon"
    declined = await turn(
        offline_stack,
        session.id,
        "call get_weather please",
        pb.TurnOptions(tools=[WEATHER], tool_choice=pb.ToolChoice(mode=pb.TOOL_CHOICE_MODE_NONE)),
    )
    assert not declined[-1].assistant_message.tool_calls


async def test_the_offline_model_refuses_what_it_cannot_honour_and_stores_nothing(offline_stack: Stack) -> None:
    session = await create_session(offline_stack, model="agentapi-offline")
    for options, field in (
        (pb.TurnOptions(logit_bias={"1": 5}), "options.logit_bias"),
        (pb.TurnOptions(modalities=["text", "audio"]), "options.modalities"),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await turn(offline_stack, session.id, "hello", options)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error_reason(caught.value) == "UNSUPPORTED_PARAMETER" and field_violations(caught.value) == [field]
    assert await all_messages(offline_stack, session.id) == []


async def test_developer_messages_and_audio_and_file_parts_are_kept(direct: Stack, upstream: object) -> None:
    stack = direct
    session = await create_session(stack, model="scripted-a")
    text = f"parts {uuid.uuid4().hex}"
    messages = [
        pb.InputMessage(role=pb.ROLE_DEVELOPER, content="Answer in French."),
        pb.InputMessage(
            role=pb.ROLE_USER,
            content_parts=[
                pb.ContentPart(type="text", text=text),
                pb.ContentPart(type="image_url", image_url="https://example.com/a.png", detail="low"),
                pb.ContentPart(type="input_audio", input_audio=pb.InputAudio(data="UklGRg==", format="wav")),
                pb.ContentPart(type="file", file=pb.FileContent(file_id="file-abc", filename="a.pdf")),
            ],
        ),
    ]
    call = stack.sessions.SendStreamingMessage(
        pb.SendStreamingMessageRequest(session_id=session.id, messages=messages), metadata=AUTH
    )
    [event async for event in call]
    body = next(
        r["body"]
        for r in upstream.requests
        if r["path"].endswith("/chat/completions") and text in json.dumps(r["body"])
    )
    assert body["messages"][0] == {"role": "developer", "content": "Answer in French."}
    parts = body["messages"][1]["content"]
    assert parts[1] == {"type": "image_url", "image_url": {"url": "https://example.com/a.png", "detail": "low"}}
    assert parts[2] == {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}}
    assert parts[3] == {"type": "file", "file": {"file_id": "file-abc", "filename": "a.pdf"}}
    stored = await all_messages(stack, session.id)
    assert stored[0].role == pb.ROLE_DEVELOPER and stored[1].content_parts[3].file.file_id == "file-abc"
