"""OpenAI ``GET /v1/models`` and ``GET /v1/models/{model}``: the upstream
models of the catalog, then every agent as ``agent:<key>``."""

from __future__ import annotations

from typing import Any

import grpc
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from agentapi import v1 as pb
from gateway.bridge import Bridge, call_metadata
from gateway.errors import ApiError, OpenAIKind, error_response, from_rpc_error, openai_error
from gateway.openai.chat_convert import AGENT_PREFIX


def _upstream(model: pb.Model) -> dict[str, Any]:
    return {"id": model.id, "object": "model", "created": 0, "owned_by": model.owned_by or "upstream"}


def _agent(agent: pb.Agent) -> dict[str, Any]:
    return {
        "id": f"{AGENT_PREFIX}{agent.key}",
        "object": "model",
        "created": agent.create_time.seconds,
        "owned_by": "agentapi",
    }


def model_not_found(model: str) -> ApiError:
    """OpenAI's 404 for a model that does not exist: code ``model_not_found``, ``param`` ``model``."""
    message = f"The model '{model}' does not exist or you do not have access to it."
    kind = OpenAIKind(404, "invalid_request_error", "model_not_found")
    return ApiError(404, openai_error(404, message, "MODEL_NOT_FOUND", "model", kind))


async def list_models(request: Request) -> Response:
    """``{"object": "list", "data": [model...]}``: upstream models, then agents."""
    bridge: Bridge = request.app.state.bridge
    metadata = call_metadata(request)
    try:
        models = await bridge.models.ListModels(pb.ListModelsRequest(), metadata=metadata)
        data = [_upstream(m) for m in models.models]
        token = ""
        while True:
            page = await bridge.agents.ListAgents(
                pb.ListAgentsRequest(page_size=100, page_token=token), metadata=metadata
            )
            data.extend(_agent(a) for a in page.agents)
            token = page.next_page_token
            if not token:
                break
    except grpc.aio.AioRpcError as exc:
        return error_response(from_rpc_error(exc))
    return JSONResponse({"object": "list", "data": data})


async def get_model(request: Request) -> Response:
    """One model object: an upstream model id of the catalog, or
    ``agent:<key>`` for an agent. 404 ``model_not_found`` for anything else."""
    bridge: Bridge = request.app.state.bridge
    metadata = call_metadata(request)
    model: str = request.path_params["model"]
    try:
        if model.startswith(AGENT_PREFIX):
            key = model[len(AGENT_PREFIX) :]
            try:
                found = await bridge.agents.GetAgent(pb.GetAgentRequest(agent_id=key), metadata=metadata)
            except grpc.aio.AioRpcError as exc:
                if exc.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
                    return error_response(model_not_found(model))
                raise
            if found.agent.key != key:  # GetAgent also takes a UUID; a model id names the key
                return error_response(model_not_found(model))
            return JSONResponse(_agent(found.agent))
        models = await bridge.models.ListModels(pb.ListModelsRequest(), metadata=metadata)
    except grpc.aio.AioRpcError as exc:
        return error_response(from_rpc_error(exc))
    for upstream in models.models:
        if upstream.id == model:
            return JSONResponse(_upstream(upstream))
    return error_response(model_not_found(model))
