"""Tenants and their API keys."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy.exc import IntegrityError

from server.domain.auth import secret_hash
from server.domain.common import DEFAULT_TENANT, Principal, new_id, require_operator, require_uuid, utcnow
from server.domain.errors import AgentAPIError, Violations, not_found
from server.domain.pagination import PageTokens, page_size
from server.store.accounts import ApiKeyRepository, TenantRepository, tenant_cache
from server.store.db import Database
from server.store.models import ApiKeyRow, TenantRow

TENANT_ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
BUDGET_PERIODS = ("day", "month")
TENANT_FIELDS = ("display_name", "budget", "rate_limits")
SECRET_PREFIX = "sk-aa-"
# What DECIMAL(20, 10) holds.
MAX_COST_USD = Decimal(10) ** 10


@dataclass
class TenantFields:
    """The writable fields of a tenant. None caps mean unlimited."""

    id: str = ""
    display_name: str = ""
    budget_period: str = "month"
    max_tokens: int | None = None
    max_cost_usd: Decimal | None = None
    requests_per_minute: int = 0
    tokens_per_minute: int = 0


def validate_tenant(fields: TenantFields) -> None:
    """Raises INVALID_ARGUMENT (FIELD_VIOLATION) naming every out-of-range field."""
    violations = Violations()
    if not TENANT_ID_PATTERN.match(fields.id):
        violations.add("tenant.id", "must be 1 to 63 of a-z, 0-9, '-' or '_', starting with a letter or digit")
    if fields.budget_period not in BUDGET_PERIODS:
        violations.add("tenant.budget.period", "must be BUDGET_PERIOD_DAY or BUDGET_PERIOD_MONTH")
    if fields.max_tokens is not None and fields.max_tokens < 1:
        violations.add("tenant.budget.max_tokens", "must be at least 1, or unset for no cap")
    cap = fields.max_cost_usd
    if isinstance(cap, float):  # a caller's float: its shortest decimal form
        cap = fields.max_cost_usd = Decimal(repr(cap))
    if cap is not None and not (cap.is_finite() and 0 < cap < MAX_COST_USD):
        violations.add("tenant.budget.max_cost_usd", f"must be above 0 and below {MAX_COST_USD}, or unset for no cap")
    if fields.requests_per_minute < 0:
        violations.add("tenant.rate_limits.requests_per_minute", "must be 0 (unlimited) or more")
    if fields.tokens_per_minute < 0:
        violations.add("tenant.rate_limits.tokens_per_minute", "must be 0 (unlimited) or more")
    violations.raise_if_any()


class TenantService:
    """Creates, reads, lists, updates and deletes tenants. Operators only."""

    def __init__(self, db: Database, tokens: PageTokens) -> None:
        self.db = db
        self.tokens = tokens

    async def create(self, principal: Principal, fields: TenantFields) -> TenantRow:
        """Raises ALREADY_EXISTS (TENANT_ALREADY_EXISTS), INVALID_ARGUMENT, PERMISSION_DENIED."""
        require_operator(principal)
        validate_tenant(fields)
        now = utcnow()
        row = TenantRow(**fields.__dict__, create_time=now, update_time=now, delete_time=None)
        async with self.db.session() as session:
            if await TenantRepository(session).get(fields.id) is not None:
                raise _tenant_exists(fields.id)
            session.add(row)
            try:
                await session.commit()
            except IntegrityError as exc:
                raise _tenant_exists(fields.id) from exc
        tenant_cache(self.db).forget(row.id)
        return row

    async def get(self, principal: Principal, tenant_id: str) -> TenantRow:
        """Operators read any tenant, admins their own. Raises NOT_FOUND (TENANT_NOT_FOUND)."""
        if not principal.operator and not (principal.admin and principal.tenant_id == tenant_id):
            require_operator(principal)
        async with self.db.session() as session:
            row = await TenantRepository(session).get(tenant_id)
        if row is None or row.delete_time is not None:
            raise not_found("tenant", tenant_id)
        return row

    async def list(self, principal: Principal, size: int, token: str) -> tuple[list[TenantRow], str]:
        """A page of live tenants by (create_time, id), and the next token."""
        require_operator(principal)
        limit = page_size(size)
        params = {"kind": "tenants"}
        async with self.db.session() as session:
            rows = await TenantRepository(session).page(self.tokens.time_cursor(token, params), limit + 1)
        return self.tokens.page(rows, limit, params)

    async def update(self, principal: Principal, fields: TenantFields, paths: list[str]) -> TenantRow:
        """Updates display_name, budget and/or rate_limits. Raises NOT_FOUND, INVALID_ARGUMENT."""
        require_operator(principal)
        violations = Violations()
        for path in paths:
            if path.split(".")[0] not in TENANT_FIELDS:
                violations.add("update_mask", f"unknown or read-only field {path!r}")
        violations.raise_if_any()
        groups = {p.split(".")[0] for p in paths} or set(TENANT_FIELDS)
        columns = {
            "display_name": ("display_name",),
            "budget": ("budget_period", "max_tokens", "max_cost_usd"),
            "rate_limits": ("requests_per_minute", "tokens_per_minute"),
        }
        async with self.db.session() as session:
            row = await TenantRepository(session).get(fields.id)
            if row is None or row.delete_time is not None:
                raise not_found("tenant", fields.id)
            merged = TenantFields(**{k: getattr(row, k) for k in TenantFields.__dataclass_fields__})
            for group in groups:
                for column in columns[group]:
                    setattr(merged, column, getattr(fields, column))
            validate_tenant(merged)
            for key, value in merged.__dict__.items():
                setattr(row, key, value)
            row.update_time = utcnow()
            await session.commit()
        tenant_cache(self.db).forget(row.id)
        return row

    async def delete(self, principal: Principal, tenant_id: str) -> TenantRow:
        """Soft-deletes; its keys fail from the next request. Raises NOT_FOUND,
        FAILED_PRECONDITION (DEFAULT_TENANT) for ``default``."""
        require_operator(principal)
        if tenant_id == DEFAULT_TENANT:
            raise AgentAPIError("FAILED_PRECONDITION", "DEFAULT_TENANT", "the default tenant cannot be deleted")
        async with self.db.session() as session:
            row = await TenantRepository(session).get(tenant_id)
            if row is None or row.delete_time is not None:
                raise not_found("tenant", tenant_id)
            row.delete_time = row.update_time = utcnow()
            await session.commit()
        tenant_cache(self.db).forget(row.id)
        return row


class ApiKeyService:
    """Creates, lists and revokes API keys."""

    def __init__(self, db: Database, tokens: PageTokens) -> None:
        self.db = db
        self.tokens = tokens

    @staticmethod
    def _target_tenant(principal: Principal, tenant_id: str) -> str:
        """The tenant an admin acts on; a foreign tenant is NOT_FOUND for non-operators."""
        if not principal.admin:
            raise AgentAPIError("PERMISSION_DENIED", "ADMIN_REQUIRED", "only admin keys manage API keys")
        tenant_id = tenant_id or principal.tenant_id
        if tenant_id != principal.tenant_id and not principal.operator:
            raise not_found("tenant", tenant_id)
        return tenant_id

    async def create(
        self, principal: Principal, tenant_id: str, display_name: str, scope: str, expire_time: datetime | None
    ) -> tuple[ApiKeyRow, str]:
        """Stores a key and returns it with its secret (shown once). Raises
        INVALID_ARGUMENT, NOT_FOUND (TENANT_NOT_FOUND), PERMISSION_DENIED."""
        tenant_id = self._target_tenant(principal, tenant_id)
        violations = Violations()
        if scope not in ("admin", "client"):
            violations.add("api_key.scope", "must be API_KEY_SCOPE_ADMIN or API_KEY_SCOPE_CLIENT")
        if expire_time is not None and expire_time <= utcnow():
            violations.add("api_key.expire_time", "must be in the future")
        violations.raise_if_any()
        secret = SECRET_PREFIX + secrets.token_urlsafe(32)
        row = ApiKeyRow(
            id=new_id(),
            tenant_id=tenant_id,
            display_name=display_name,
            scope=scope,
            secret_prefix=secret[:12],
            secret_hash=secret_hash(secret),
            expire_time=expire_time,
            create_time=utcnow(),
            revoke_time=None,
        )
        async with self.db.session() as session:
            tenant = await TenantRepository(session).get(tenant_id)
            if tenant is None or tenant.delete_time is not None:
                raise not_found("tenant", tenant_id)
            session.add(row)
            await session.commit()
        return row, secret

    async def list(self, principal: Principal, tenant_id: str, size: int, token: str) -> tuple[list[ApiKeyRow], str]:
        """A page of a tenant's keys by (create_time, id), and the next token."""
        tenant_id = self._target_tenant(principal, tenant_id)
        limit = page_size(size)
        params = {"kind": "api_keys", "tenant": tenant_id}
        async with self.db.session() as session:
            rows = await ApiKeyRepository(session).page(tenant_id, self.tokens.time_cursor(token, params), limit + 1)
        return self.tokens.page(rows, limit, params)

    async def revoke(self, principal: Principal, key_id: str) -> ApiKeyRow:
        """Revokes a key. Raises NOT_FOUND (API_KEY_NOT_FOUND), also for another tenant's key."""
        key_id = require_uuid(key_id, "api_key_id", "INVALID_API_KEY_ID")
        async with self.db.session() as session:
            row = await ApiKeyRepository(session).get(key_id)
            if row is None:
                raise not_found("api_key", key_id)
            try:
                self._target_tenant(principal, row.tenant_id)
            except AgentAPIError as exc:
                if exc.code == "NOT_FOUND":
                    raise not_found("api_key", key_id) from exc
                raise
            if row.revoke_time is None:
                row.revoke_time = utcnow()
                await session.commit()
        return row


def _tenant_exists(tenant_id: str) -> AgentAPIError:
    return AgentAPIError(
        "ALREADY_EXISTS", "TENANT_ALREADY_EXISTS", f"tenant {tenant_id!r} exists", {"tenant_id": tenant_id}
    )
