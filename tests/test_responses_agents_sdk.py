"""The OpenAI Agents SDK (``openai-agents``, whose default model class speaks
the Responses API) running an agent with a function tool against the
bridge, through the real LiteLLM proxy and the scripted upstream."""

from __future__ import annotations

from agents import Agent, OpenAIResponsesModel, Runner, function_tool, set_tracing_disabled

from tests.helpers import sent_upstream
from tests.stack import Stack
from tests.support.upstream import ScriptedUpstream

set_tracing_disabled(True)  # the SDK would export traces to OpenAI


@function_tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"sunny in {city}"


def _agent(stack: Stack) -> Agent:
    model = OpenAIResponsesModel(model="scripted-a", openai_client=stack.openai())
    return Agent(name="forecaster", instructions="Answer with the weather.", tools=[get_weather], model=model)


async def test_agents_sdk_runs_a_function_tool(stack: Stack, upstream: ScriptedUpstream) -> None:
    result = await Runner.run(_agent(stack), 'weather please [[tool:get_weather {"city": "Paris"}]]')
    assert result.final_output == "Tool result: sunny in Paris"
    assert [item.type for item in result.new_items] == [
        "tool_call_item",
        "tool_call_output_item",
        "message_output_item",
    ]


async def test_agents_sdk_streams_a_function_tool(stack: Stack, upstream: ScriptedUpstream) -> None:
    streamed = Runner.run_streamed(_agent(stack), 'stream the weather [[tool:get_weather {"city": "Oslo"}]]')
    kinds = [event.type async for event in streamed.stream_events()]
    assert "raw_response_event" in kinds and "run_item_stream_event" in kinds
    assert streamed.final_output == "Tool result: sunny in Oslo"


async def test_agents_sdk_chains_by_previous_response_id(stack: Stack, upstream: ScriptedUpstream) -> None:
    agent = _agent(stack)
    first = await Runner.run(agent, "my name is Ada")
    second = await Runner.run(agent, "what is my name", previous_response_id=first.last_response_id)
    assert second.final_output == "Echo: what is my name"
    contents = [m.get("content") for m in sent_upstream(upstream, "what is my name")["messages"]]
    assert "my name is Ada" in contents
