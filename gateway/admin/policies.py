"""`/admin/v1/tenants/{id}/policy`: a tenant's rails policy, its versions and rollback.

A document is accepted only when it parses (`rails.policy`) and builds (PII entities
known, patterns compile, NeMo configs load); otherwise 422 `invalid_policy` lists each
problem's JSON path and reason, and the active version stays as it was. Every accepted
document is kept as a new version and becomes active; a rollback activates an older
one. The store's active version wins over the config file's policy for the tenant.
"""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

import anyio.to_thread
from litestar import get, post, put
from litestar.di import NamedDependency
from litestar.params import Body, FromPath, JSONBody

from gateway.admin.context import Admin
from gateway.admin.errors import InvalidPolicy
from gateway.admin.schemas import (
    ActivePolicy,
    PolicyVersionInfo,
    PolicyVersionOut,
    PolicyVersions,
    Rollback,
)
from gateway.errors import NotFound
from gateway.store.base import PolicyVersion
from rails import Policy, PolicyError, dump_policy, parse_policy
from rails.policy import DEFAULT_POLICY

__all__ = ["accepted", "file_policy", "routes"]


async def accepted(admin: Admin, document: Any) -> Policy:
    """Parse and build a policy document; `InvalidPolicy` (422) says what is wrong.
    Building may load an engine (Presidio) the first time, so it runs in a thread."""
    try:
        policy = parse_policy(document)
    except PolicyError as exc:
        raise InvalidPolicy(exc.problems) from None
    if admin.registry is not None:
        try:
            await anyio.to_thread.run_sync(admin.registry.pipeline, policy)
        except ValueError as exc:
            raise InvalidPolicy([("$", str(exc))]) from None
    return policy


def file_policy(admin: Admin, tenant_id: str) -> tuple[Literal["config", "default"], Policy]:
    """The policy the config file gives a tenant: its own, else `default_policy`."""
    own = any(t.id == tenant_id and t.policy for t in admin.settings.tenants)
    policy = admin.policies.file_policy(tenant_id) if admin.policies else DEFAULT_POLICY
    return ("config" if own else "default"), policy


def _version_out(version: PolicyVersion, active: int | None) -> PolicyVersionOut:
    return PolicyVersionOut(
        version=version.version,
        created_at=version.created_at,
        author=version.author,
        active=version.version == active,
        tenant_id=version.tenant_id,
        document=version.document,
    )


async def _active_version(admin: Admin, tenant_id: str) -> int | None:
    active = await admin.store.active_policy(tenant_id)
    return None if active is None else active.version


@get("/tenants/{tenant_id:str}/policy", summary="The policy a tenant's calls run now")
async def get_policy(tenant_id: FromPath[str], admin: NamedDependency[Admin]) -> ActivePolicy:
    await admin.tenant(tenant_id)
    active = await admin.store.active_policy(tenant_id)
    if active is not None:
        return ActivePolicy(
            tenant_id=tenant_id, source="store", version=active.version, document=active.document
        )
    source, policy = file_policy(admin, tenant_id)
    return ActivePolicy(
        tenant_id=tenant_id, source=source, version=None, document=dump_policy(policy)
    )


@put(
    "/tenants/{tenant_id:str}/policy",
    summary="Set a tenant's policy (a new version, active at once)",
)
async def set_policy(
    tenant_id: FromPath[str],
    admin: NamedDependency[Admin],
    data: Annotated[dict[str, Any], Body(description="A rails policy document (README, Rails).")],
) -> PolicyVersionOut:
    await admin.tenant(tenant_id)
    await accepted(admin, data)
    version = await admin.store.add_policy_version(tenant_id, data, admin.actor, time.time())
    await admin.changed("policy.set", tenant_id, version=version.version)
    return _version_out(version, version.version)


@get("/tenants/{tenant_id:str}/policy/versions", summary="Every accepted version, oldest first")
async def list_versions(tenant_id: FromPath[str], admin: NamedDependency[Admin]) -> PolicyVersions:
    await admin.tenant(tenant_id)
    versions = await admin.store.policy_versions(tenant_id)
    active = await _active_version(admin, tenant_id)
    data = [
        PolicyVersionInfo(
            version=v.version, created_at=v.created_at, author=v.author, active=v.version == active
        )
        for v in versions
    ]
    return PolicyVersions(tenant_id=tenant_id, data=data)


@get("/tenants/{tenant_id:str}/policy/versions/{version:int}", summary="One version")
async def get_version(
    tenant_id: FromPath[str], version: FromPath[int], admin: NamedDependency[Admin]
) -> PolicyVersionOut:
    await admin.tenant(tenant_id)
    found = await admin.store.get_policy_version(tenant_id, version)
    if found is None:
        raise NotFound("Unknown policy version.", param="version")
    return _version_out(found, await _active_version(admin, tenant_id))


@post(
    "/tenants/{tenant_id:str}/policy/rollback",
    status_code=200,
    summary="Make an earlier version the active one",
)
async def rollback(
    tenant_id: FromPath[str], data: JSONBody[Rollback], admin: NamedDependency[Admin]
) -> PolicyVersionOut:
    await admin.tenant(tenant_id)
    found = await admin.store.get_policy_version(tenant_id, data.version)
    if found is None:
        raise NotFound("Unknown policy version.", param="version")
    await accepted(admin, found.document)
    previous = await _active_version(admin, tenant_id)
    await admin.store.activate_policy(tenant_id, data.version)
    await admin.changed("policy.rollback", tenant_id, version=data.version, previous=previous)
    return _version_out(found, data.version)


routes = [get_policy, set_policy, list_versions, get_version, rollback]
