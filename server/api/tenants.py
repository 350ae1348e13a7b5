"""TenantService, ApiKeyService and UsageService servicers."""

from __future__ import annotations

from decimal import Decimal

import grpc

from agentapi import v1 as pb
from server.api import convert
from server.api.interceptor import current_principal
from server.domain.tenants import ApiKeyService, TenantService
from server.domain.usage import UsageService


class TenantServicer(pb.TenantServiceServicer):
    """Serves ``agentapi.v1.TenantService``."""

    def __init__(self, tenants: TenantService) -> None:
        self.tenants = tenants

    async def CreateTenant(
        self, request: pb.CreateTenantRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateTenantResponse:
        row = await self.tenants.create(current_principal(), convert.tenant_fields(request.tenant))
        return pb.CreateTenantResponse(tenant=convert.tenant(row))

    async def GetTenant(self, request: pb.GetTenantRequest, context: grpc.aio.ServicerContext) -> pb.GetTenantResponse:
        return pb.GetTenantResponse(
            tenant=convert.tenant(await self.tenants.get(current_principal(), request.tenant_id))
        )

    async def ListTenants(
        self, request: pb.ListTenantsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListTenantsResponse:
        rows, token = await self.tenants.list(current_principal(), request.page_size, request.page_token)
        return pb.ListTenantsResponse(tenants=[convert.tenant(r) for r in rows], next_page_token=token)

    async def UpdateTenant(
        self, request: pb.UpdateTenantRequest, context: grpc.aio.ServicerContext
    ) -> pb.UpdateTenantResponse:
        row = await self.tenants.update(
            current_principal(), convert.tenant_fields(request.tenant), list(request.update_mask.paths)
        )
        return pb.UpdateTenantResponse(tenant=convert.tenant(row))

    async def DeleteTenant(
        self, request: pb.DeleteTenantRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteTenantResponse:
        return pb.DeleteTenantResponse(
            tenant=convert.tenant(await self.tenants.delete(current_principal(), request.tenant_id))
        )


class ApiKeyServicer(pb.ApiKeyServiceServicer):
    """Serves ``agentapi.v1.ApiKeyService``."""

    def __init__(self, keys: ApiKeyService) -> None:
        self.keys = keys

    async def CreateApiKey(
        self, request: pb.CreateApiKeyRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateApiKeyResponse:
        key = request.api_key
        row, secret = await self.keys.create(
            current_principal(),
            key.tenant_id,
            key.display_name,
            convert.SCOPE_FROM_PROTO.get(key.scope, ""),
            convert.to_datetime(key.expire_time, key.HasField("expire_time")),
        )
        return pb.CreateApiKeyResponse(api_key=convert.api_key(row), secret=secret)

    async def ListApiKeys(
        self, request: pb.ListApiKeysRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListApiKeysResponse:
        rows, token = await self.keys.list(
            current_principal(), request.tenant_id, request.page_size, request.page_token
        )
        return pb.ListApiKeysResponse(api_keys=[convert.api_key(r) for r in rows], next_page_token=token)

    async def RevokeApiKey(
        self, request: pb.RevokeApiKeyRequest, context: grpc.aio.ServicerContext
    ) -> pb.RevokeApiKeyResponse:
        row = await self.keys.revoke(current_principal(), request.api_key_id)
        return pb.RevokeApiKeyResponse(api_key=convert.api_key(row))


class UsageServicer(pb.UsageServiceServicer):
    """Serves ``agentapi.v1.UsageService``."""

    def __init__(self, usage: UsageService) -> None:
        self.usage = usage

    async def GetUsage(self, request: pb.GetUsageRequest, context: grpc.aio.ServicerContext) -> pb.GetUsageResponse:
        rows = await self.usage.report(
            current_principal(),
            request.tenant_id,
            convert.to_datetime(request.start_time, request.HasField("start_time")),
            convert.to_datetime(request.end_time, request.HasField("end_time")),
            [convert.DIMENSION_FROM_PROTO.get(d, str(d)) for d in request.group_by],
        )
        response = pb.GetUsageResponse(rows=[convert.usage_row(r) for r in rows])
        total = response.total
        for row in response.rows:
            total.turns += row.turns
            total.prompt_tokens += row.prompt_tokens
            total.completion_tokens += row.completion_tokens
            total.total_tokens += row.total_tokens
        # Summed exactly (Decimal), converted to the proto's double once.
        total.cost_usd = float(sum((Decimal(r["cost_usd"]) for r in rows), Decimal(0)))
        return response
