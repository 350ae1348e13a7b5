"""ModelService servicer."""

from __future__ import annotations

import grpc

from agentapi import v1 as pb
from server.domain.catalog import Catalog


class ModelServicer(pb.ModelServiceServicer):
    """Serves ``agentapi.v1.ModelService`` from the cached catalog."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog

    async def ListModels(
        self, request: pb.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListModelsResponse:
        models = await self.catalog.models()
        response = pb.ListModelsResponse(
            models=[
                pb.Model(
                    id=m.id,
                    owned_by=m.owned_by,
                    context_window=m.context_window,
                    input_cost_per_token=m.input_cost_per_token,
                    output_cost_per_token=m.output_cost_per_token,
                )
                for m in models
            ],
            stale=self.catalog.stale,
        )
        if self.catalog.refresh_time is not None:
            response.refresh_time.FromDatetime(self.catalog.refresh_time)
        return response
