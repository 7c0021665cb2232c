"""`memory://`: the store in one process's dictionaries. Nothing survives a restart."""

from __future__ import annotations

import msgspec

from gateway.ledger.memory import MemoryLedger
from gateway.limits.memory import MemoryLimits
from gateway.store.base import ApiKey, DuplicateKey, Tenant

__all__ = ["MemoryStore"]


class MemoryStore:
    def __init__(self) -> None:
        self._tenants: dict[str, Tenant] = {}
        self._keys: dict[str, ApiKey] = {}
        self.limits = MemoryLimits()
        self.ledger = MemoryLedger()

    async def ping(self) -> bool:
        return True

    async def close(self) -> None:
        return None

    async def put_tenant(self, tenant: Tenant) -> None:
        self._tenants[tenant.id] = tenant

    async def get_tenant(self, tenant_id: str) -> Tenant | None:
        return self._tenants.get(tenant_id)

    async def list_tenants(self) -> list[Tenant]:
        return [self._tenants[k] for k in sorted(self._tenants)]

    async def put_key(self, key: ApiKey) -> None:
        if key.key_sha256 in self._keys:
            raise DuplicateKey(key.id)
        self._keys[key.key_sha256] = key

    async def get_key(self, key_sha256: str) -> ApiKey | None:
        return self._keys.get(key_sha256)

    async def list_keys(self, tenant_id: str) -> list[ApiKey]:
        keys = [k for k in self._keys.values() if k.tenant_id == tenant_id]
        return sorted(keys, key=lambda k: (k.created_at, k.id))

    async def revoke_key(self, tenant_id: str, key_id: str, at: float) -> bool:
        for digest, key in self._keys.items():
            if key.tenant_id == tenant_id and key.id == key_id:
                self._keys[digest] = msgspec.structs.replace(key, revoked_at=at)
                return True
        return False
