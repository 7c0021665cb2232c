"""Who is calling: key → (tenant, key), from the config file first, then the store.

File tenants and keys (GitOps) are read once at start and win over the store for
the same id. A key is refused (401) when it is unknown, revoked or expired, or when
its tenant is unknown or disabled; the message never says which, nor echoes the key.

Store lookups are cached in the process (unknown keys too, up to `CACHE_ENTRIES`) and
the cache is emptied whenever the store's change counter moves (`gateway.reload`
polls it every 250 ms), so a key revoked or a tenant disabled through the admin API is
refused by every replica within a second, without a store round trip per request.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

from gateway.config import Settings
from gateway.errors import AuthError
from gateway.keys import hash_key
from gateway.store.base import ApiKey, Store, Tenant

__all__ = ["Authenticator", "Caller", "extract_key"]

T = TypeVar("T")

MARK_USED_S = 60.0
"""A replica records a store key's use at most this often (`ApiKey.last_used_at`)."""

CACHE_ENTRIES = 10_000
"""Most keys (and tenants) remembered between two changes; beyond, the cache restarts."""


@dataclass(frozen=True, slots=True)
class Caller:
    """The authenticated tenant and key of one request."""

    tenant: Tenant
    key: ApiKey

    def may_use(self, model: str) -> bool:
        allowed = self.tenant.models
        return allowed is None or model in allowed


def extract_key(authorization: str | None, x_api_key: str | None) -> str | None:
    """The key from `Authorization: Bearer …` or `x-api-key`, else None."""
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    if x_api_key and x_api_key.strip():
        return x_api_key.strip()
    return None


class Authenticator:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        spawn: Callable[[Coroutine[Any, Any, Any]], None] | None = None,
    ) -> None:
        self._store = store
        self._spawn = spawn
        self._marked: dict[str, float] = {}
        """Store key id → when this replica last recorded its use."""
        self._tenants: dict[str, Tenant] = {}
        self._keys: dict[str, ApiKey] = {}
        self._stored_keys: dict[str, ApiKey | None] = {}
        self._stored_tenants: dict[str, Tenant | None] = {}
        for t in settings.tenants:
            self._tenants[t.id] = Tenant(
                id=t.id,
                name=t.name,
                models=t.models,
                limits=t.limits,
                model_limits=t.model_limits,
                prices=t.prices,
                langfuse=t.langfuse,
            )
            for i, k in enumerate(t.keys):
                digest = k.key_sha256.lower()
                self._keys[digest] = ApiKey(
                    id=f"cfg_{t.id}_{i}",
                    tenant_id=t.id,
                    key_sha256=digest,
                    name=k.name,
                    limits=k.limits,
                )

    @property
    def file_tenants(self) -> dict[str, Tenant]:
        return self._tenants

    def invalidate(self) -> None:
        """Forget what was read from the store (it changed)."""
        self._stored_keys = {}
        self._stored_tenants = {}

    async def tenant(self, tenant_id: str) -> Tenant | None:
        found = self._tenants.get(tenant_id)
        if found is not None:
            return found
        return await _cached(self._stored_tenants, tenant_id, self._store.get_tenant)

    async def _stored_key(self, digest: str) -> ApiKey | None:
        return await _cached(self._stored_keys, digest, self._store.get_key)

    async def authenticate(self, secret: str | None) -> Caller:
        """Resolve a presented key; raise `AuthError` for anything but a usable key."""
        if not secret:
            raise AuthError("Missing API key. Send `Authorization: Bearer <key>`.")
        digest = hash_key(secret)
        key = self._keys.get(digest) or await self._stored_key(digest)
        if key is None or not hmac.compare_digest(key.key_sha256, digest):
            raise AuthError("Invalid API key.")
        if not key.usable(time.time()):
            raise AuthError("Invalid API key.")
        tenant = await self.tenant(key.tenant_id)
        if tenant is None or tenant.disabled:
            raise AuthError("Invalid API key.")
        if self._spawn is not None and digest not in self._keys:
            self._mark_used(key)
        return Caller(tenant=tenant, key=key)

    def _mark_used(self, key: ApiKey) -> None:
        """Record a store key's use in the background, at most every `MARK_USED_S`."""
        now = time.time()
        if now - self._marked.get(key.id, 0.0) < MARK_USED_S:
            return
        if len(self._marked) >= CACHE_ENTRIES:
            self._marked.clear()
        self._marked[key.id] = now
        assert self._spawn is not None
        self._spawn(self._store.mark_used(key.tenant_id, key.id, now))


async def _cached(
    cache: dict[str, T | None], key: str, load: Callable[[str], Awaitable[T | None]]
) -> T | None:
    """`cache[key]`, else `load(key)` remembered (misses too). The dict is taken before
    the await: a result that arrives after `invalidate()` lands in the discarded one."""
    if key in cache:
        return cache[key]
    found = await load(key)
    if len(cache) >= CACHE_ENTRIES:
        cache.clear()
    cache[key] = found
    return found
