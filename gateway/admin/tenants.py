"""`/admin/v1/tenants`: create, read, list (paginated), update, disable, enable, delete.

Tenants of the config file are listed and read (`source: "config"`) but are read-only
here: changing or deleting one, or creating a store tenant with its id, is 409. A
disabled tenant's keys are refused (401) from the next request on.
"""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Any

import msgspec
from litestar import delete, get, patch, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody, QueryParameter

from gateway.admin.context import Admin
from gateway.admin.errors import Conflict
from gateway.admin.schemas import TenantCreate, TenantOut, TenantPage, TenantUpdate
from gateway.config import LangfuseSettings, Settings
from gateway.errors import InvalidRequest, NotFound
from gateway.limits.spec import ModelLimits
from gateway.pricing import ModelPrice
from gateway.store.base import Tenant

__all__ = ["routes", "store_tenant", "tenant_out"]


async def tenant_out(admin: Admin, tenant: Tenant) -> TenantOut:
    active = await admin.store.active_policy(tenant.id)
    return TenantOut(
        id=tenant.id,
        name=tenant.name,
        source="config" if admin.in_file(tenant.id) else "store",
        disabled=tenant.disabled,
        models=None if tenant.models is None else list(tenant.models),
        limits=tenant.limits,
        model_limits=tenant.model_limits,
        prices=tenant.prices,
        langfuse=tenant.langfuse,
        metadata=tenant.metadata,
        policy_version=None if active is None else active.version,
        created_at=tenant.created_at,
        updated_at=tenant.updated_at,
    )


async def store_tenant(admin: Admin, tenant_id: str) -> Tenant:
    """A tenant this API may change: 409 for a config tenant, 404 when unknown."""
    if admin.in_file(tenant_id):
        raise Conflict(
            f"Tenant {tenant_id!r} is defined in the config file; change it there.",
            param="tenant_id",
        )
    tenant = await admin.store.get_tenant(tenant_id)
    if tenant is None:
        raise NotFound("Unknown tenant.", param="tenant_id")
    return tenant


def _check(
    settings: Settings,
    models: list[str] | tuple[str, ...] | None,
    model_limits: dict[str, ModelLimits] | None,
    prices: dict[str, ModelPrice] | None,
    langfuse: LangfuseSettings | None,
) -> None:
    known = {m.name for m in settings.models}
    for field, names in (("models", models), ("model_limits", model_limits), ("prices", prices)):
        unknown = sorted(set(names or ()) - known)
        if unknown:
            raise InvalidRequest(f"Unknown model {unknown[0]!r} in `{field}`.", param=field)
    if langfuse is not None and not langfuse.host.startswith(("http://", "https://")):
        raise InvalidRequest(
            "`langfuse.host` must be an http:// or https:// URL.", param="langfuse"
        )


@post("/tenants", summary="Create a tenant")
async def create_tenant(data: JSONBody[TenantCreate], admin: NamedDependency[Admin]) -> TenantOut:
    if admin.in_file(data.id):
        raise Conflict(f"Tenant {data.id!r} is defined in the config file.", param="id")
    if await admin.store.get_tenant(data.id) is not None:
        raise Conflict(f"Tenant {data.id!r} already exists.", param="id")
    _check(admin.settings, data.models, data.model_limits, data.prices, data.langfuse)
    now = time.time()
    tenant = Tenant(
        id=data.id,
        name=data.name,
        models=None if data.models is None else tuple(data.models),
        limits=data.limits,
        model_limits=data.model_limits,
        prices=data.prices,
        langfuse=data.langfuse,
        metadata=data.metadata,
        created_at=now,
        updated_at=now,
    )
    await admin.store.put_tenant(tenant)
    await admin.changed("tenant.create", tenant.id)
    return await tenant_out(admin, tenant)


@get("/tenants", summary="List tenants (config file and store), by id")
async def list_tenants(
    admin: NamedDependency[Admin],
    limit: Annotated[int, QueryParameter(ge=1, le=500)] = 100,
    cursor: Annotated[
        str | None, QueryParameter(description="Last id of the previous page")
    ] = None,
) -> TenantPage:
    merged = {t.id: t for t in await admin.store.list_tenants()}
    merged.update(admin.auth.file_tenants)
    ids = sorted(i for i in merged if cursor is None or i > cursor)
    page = ids[:limit]
    data = await asyncio.gather(*(tenant_out(admin, merged[i]) for i in page))
    return TenantPage(data=list(data), next_cursor=page[-1] if len(ids) > limit else None)


@get("/tenants/{tenant_id:str}", summary="Read a tenant")
async def get_tenant(tenant_id: FromPath[str], admin: NamedDependency[Admin]) -> TenantOut:
    return await tenant_out(admin, await admin.tenant(tenant_id))


@patch("/tenants/{tenant_id:str}", summary="Update a tenant (fields left out keep their value)")
async def update_tenant(
    tenant_id: FromPath[str], data: JSONBody[TenantUpdate], admin: NamedDependency[Admin]
) -> TenantOut:
    tenant = await store_tenant(admin, tenant_id)
    changes: dict[str, Any] = {
        name: value
        for name in TenantUpdate.__struct_fields__
        if (value := getattr(data, name)) is not msgspec.UNSET
    }
    if not changes:
        return await tenant_out(admin, tenant)
    if changes.get("models") is not None:
        changes["models"] = tuple(changes["models"])
    _check(
        admin.settings,
        changes.get("models"),
        changes.get("model_limits"),
        changes.get("prices"),
        changes.get("langfuse"),
    )
    updated = msgspec.structs.replace(tenant, **changes, updated_at=time.time())
    await admin.store.put_tenant(updated)
    await admin.changed("tenant.update", tenant_id, fields=sorted(changes))
    return await tenant_out(admin, updated)


async def _set_disabled(admin: Admin, tenant_id: str, disabled: bool) -> TenantOut:
    tenant = await store_tenant(admin, tenant_id)
    if tenant.disabled != disabled:
        tenant = msgspec.structs.replace(tenant, disabled=disabled, updated_at=time.time())
        await admin.store.put_tenant(tenant)
        await admin.changed("tenant.disable" if disabled else "tenant.enable", tenant_id)
    return await tenant_out(admin, tenant)


@post("/tenants/{tenant_id:str}/disable", status_code=200, summary="Disable a tenant")
async def disable_tenant(tenant_id: FromPath[str], admin: NamedDependency[Admin]) -> TenantOut:
    """Its keys are refused (401) from the next request on; nothing is deleted."""
    return await _set_disabled(admin, tenant_id, True)


@post("/tenants/{tenant_id:str}/enable", status_code=200, summary="Enable a disabled tenant")
async def enable_tenant(tenant_id: FromPath[str], admin: NamedDependency[Admin]) -> TenantOut:
    return await _set_disabled(admin, tenant_id, False)


@delete("/tenants/{tenant_id:str}", summary="Delete a tenant with its keys and policies")
async def delete_tenant(tenant_id: FromPath[str], admin: NamedDependency[Admin]) -> None:
    """Its usage stays in the ledger until retention ends."""
    await store_tenant(admin, tenant_id)
    await admin.store.delete_tenant(tenant_id)
    await admin.changed("tenant.delete", tenant_id)


routes = [
    create_tenant,
    list_tenants,
    get_tenant,
    update_tenant,
    disable_tenant,
    enable_tenant,
    delete_tenant,
]
