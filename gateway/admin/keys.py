"""`/admin/v1/tenants/{id}/keys`: create, list, update, revoke and rotate a tenant's keys.

A new key's secret is in the create (or rotate) response only; the store keeps its
SHA-256. Keys of config-file tenants may be made here too (the gateway looks keys up in
the store as well); the file's own keys are managed in the file and not listed here.
Revoking, and a past `expires_at`, refuse the key (401) from the next request on.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec
from litestar import delete, get, patch, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody

from gateway.admin.context import Admin
from gateway.admin.errors import Conflict
from gateway.admin.schemas import (
    KeyCreate,
    KeyCreated,
    KeyList,
    KeyOut,
    KeyRotate,
    KeyRotated,
    KeyStatus,
    KeyUpdate,
)
from gateway.errors import InvalidRequest, NotFound
from gateway.keys import new_key
from gateway.limits.spec import Limits
from gateway.store.base import ApiKey

__all__ = ["routes"]


def key_out(key: ApiKey, now: float) -> KeyOut:
    status: KeyStatus = "active" if key.usable(now) else "expired"
    if key.revoked_at is not None:
        status = "revoked"
    return KeyOut(
        id=key.id,
        tenant_id=key.tenant_id,
        name=key.name,
        prefix=key.prefix,
        status=status,
        created_at=key.created_at,
        last_used_at=key.last_used_at,
        expires_at=key.expires_at,
        revoked_at=key.revoked_at,
        limits=key.limits,
        replaced_by=key.replaced_by,
    )


def _created(secret: str, key: ApiKey, now: float) -> KeyCreated:
    return KeyCreated(**msgspec.structs.asdict(key_out(key, now)), key=secret)


def _check_expiry(expires_at: float | None, now: float) -> None:
    if expires_at is not None and expires_at <= now:
        raise InvalidRequest("`expires_at` must be in the future.", param="expires_at")


async def _key(admin: Admin, tenant_id: str, key_id: str) -> ApiKey:
    await admin.tenant(tenant_id)
    for key in await admin.store.list_keys(tenant_id):
        if key.id == key_id:
            return key
    raise NotFound("Unknown key.", param="key_id")


async def _issue(
    admin: Admin,
    tenant_id: str,
    name: str,
    limits: Limits | None,
    expires_at: float | None,
) -> tuple[str, ApiKey]:
    secret, key = new_key(tenant_id, name=name, expires_at=expires_at)
    key = msgspec.structs.replace(key, limits=limits)
    await admin.store.put_key(key)
    return secret, key


@post("/tenants/{tenant_id:str}/keys", summary="Create a key (the secret is shown once)")
async def create_key(
    tenant_id: FromPath[str], data: JSONBody[KeyCreate], admin: NamedDependency[Admin]
) -> KeyCreated:
    await admin.tenant(tenant_id)
    now = time.time()
    _check_expiry(data.expires_at, now)
    secret, key = await _issue(admin, tenant_id, data.name, data.limits, data.expires_at)
    await admin.changed("key.create", f"{tenant_id}/{key.id}", expires_at=key.expires_at)
    return _created(secret, key, now)


@get("/tenants/{tenant_id:str}/keys", summary="List a tenant's keys (never their secrets)")
async def list_keys(tenant_id: FromPath[str], admin: NamedDependency[Admin]) -> KeyList:
    await admin.tenant(tenant_id)
    now = time.time()
    return KeyList(data=[key_out(k, now) for k in await admin.store.list_keys(tenant_id)])


@patch(
    "/tenants/{tenant_id:str}/keys/{key_id:str}", summary="Rename a key, set its expiry or limits"
)
async def update_key(
    tenant_id: FromPath[str],
    key_id: FromPath[str],
    data: JSONBody[KeyUpdate],
    admin: NamedDependency[Admin],
) -> KeyOut:
    key = await _key(admin, tenant_id, key_id)
    now = time.time()
    if key.revoked_at is not None:
        raise Conflict("The key is revoked.", param="key_id")
    changes: dict[str, Any] = {
        name: value
        for name in KeyUpdate.__struct_fields__
        if (value := getattr(data, name)) is not msgspec.UNSET
    }
    if not changes:
        return key_out(key, now)
    _check_expiry(changes.get("expires_at"), now)
    key = msgspec.structs.replace(key, **changes)
    if not await admin.store.update_key(key):
        raise NotFound("Unknown key.", param="key_id")
    await admin.changed("key.update", f"{tenant_id}/{key_id}", fields=sorted(changes))
    return key_out(key, now)


@delete("/tenants/{tenant_id:str}/keys/{key_id:str}", status_code=200, summary="Revoke a key")
async def revoke_key(
    tenant_id: FromPath[str], key_id: FromPath[str], admin: NamedDependency[Admin]
) -> KeyOut:
    key = await _key(admin, tenant_id, key_id)
    now = time.time()
    if key.revoked_at is None:
        await admin.store.revoke_key(tenant_id, key_id, now)
        key = msgspec.structs.replace(key, revoked_at=now)
        await admin.changed("key.revoke", f"{tenant_id}/{key_id}")
    return key_out(key, now)


@post(
    "/tenants/{tenant_id:str}/keys/{key_id:str}/rotate",
    status_code=200,
    summary="Replace a key; the old one works for a grace period",
)
async def rotate_key(
    tenant_id: FromPath[str],
    key_id: FromPath[str],
    data: JSONBody[KeyRotate],
    admin: NamedDependency[Admin],
) -> KeyRotated:
    """The new key gets the old one's name and limits; the old key expires after
    `grace_seconds` (or at its own expiry, if sooner) and names its successor."""
    old = await _key(admin, tenant_id, key_id)
    now = time.time()
    if not old.usable(now):
        raise Conflict("The key is revoked or expired.", param="key_id")
    if old.replaced_by is not None:
        raise Conflict("The key was rotated already.", param="key_id")
    secret, new = await _issue(admin, tenant_id, old.name, old.limits, None)
    ends = now + data.grace_seconds
    old = msgspec.structs.replace(
        old,
        expires_at=ends if old.expires_at is None else min(old.expires_at, ends),
        replaced_by=new.id,
    )
    await admin.store.update_key(old)
    await admin.changed(
        "key.rotate", f"{tenant_id}/{key_id}", new_key=new.id, grace_seconds=data.grace_seconds
    )
    return KeyRotated(key=_created(secret, new, now), old=key_out(old, now))


routes = [create_key, list_keys, update_key, revoke_key, rotate_key]
