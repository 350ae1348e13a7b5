"""Attribute names of the OpenTelemetry GenAI semantic conventions, and agentapi's own.

The GenAI conventions moved out of open-telemetry/semantic-conventions into
their own repository, open-telemetry/semantic-conventions-genai, in 2026 (core
semconv v1.42.0 deprecated its ``gen_ai.*`` copies). That repository had no
tagged release when this was written; the names below are its current ones
(``gen_ai.provider.name``, not the old ``gen_ai.system``;
``gen_ai.usage.reasoning.output_tokens``). See docs/observability.md.
"""

from __future__ import annotations

SEMCONV = "open-telemetry/semantic-conventions-genai, main as of 2026-10 (no tagged release yet)"

OPERATION_NAME = "gen_ai.operation.name"  # chat | invoke_agent | execute_tool
PROVIDER_NAME = "gen_ai.provider.name"
REQUEST_MODEL = "gen_ai.request.model"
REQUEST_MAX_TOKENS = "gen_ai.request.max_tokens"
REQUEST_TEMPERATURE = "gen_ai.request.temperature"
RESPONSE_MODEL = "gen_ai.response.model"
RESPONSE_ID = "gen_ai.response.id"
RESPONSE_FINISH_REASONS = "gen_ai.response.finish_reasons"
USAGE_INPUT_TOKENS = "gen_ai.usage.input_tokens"
USAGE_OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
USAGE_REASONING_OUTPUT_TOKENS = "gen_ai.usage.reasoning.output_tokens"
CONVERSATION_ID = "gen_ai.conversation.id"
AGENT_NAME = "gen_ai.agent.name"
TOOL_NAME = "gen_ai.tool.name"
TOOL_CALL_ID = "gen_ai.tool.call.id"
TOOL_TYPE = "gen_ai.tool.type"
INPUT_MESSAGES = "gen_ai.input.messages"  # only with OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true
OUTPUT_MESSAGES = "gen_ai.output.messages"
TOOL_CALL_ARGUMENTS = "gen_ai.tool.call.arguments"
TOOL_CALL_RESULT = "gen_ai.tool.call.result"
ERROR_TYPE = "error.type"

# agentapi's own.
TENANT_ID = "agentapi.tenant.id"
SESSION_ID = "agentapi.session.id"
ATTEMPT = "agentapi.attempt"  # 1-based attempt number of one model
FALLBACK = "agentapi.fallback"  # True when the model is a fallback model
STEP = "agentapi.step"
TOOL_EXECUTOR = "agentapi.tool.executor"
TOOL_OUTCOME = "agentapi.tool.outcome"
RUN_STATUS = "agentapi.run.status"
RUN_STEPS = "agentapi.run.steps"
