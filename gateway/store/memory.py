"""`memory://`: the store in one process's dictionaries. Nothing survives a restart."""

from __future__ import annotations

import bisect
from typing import Any

import msgspec

from gateway.ledger.memory import MemoryLedger
from gateway.limits.memory import MemoryLimits
from gateway.store.base import (
    ApiKey,
    AuditEntry,
    DuplicateKey,
    PolicyVersion,
    RailsConfigVersion,
    Tenant,
)

__all__ = ["MemoryStore"]


class MemoryStore:
    def __init__(self) -> None:
        self._tenants: dict[str, Tenant] = {}
        self._keys: dict[str, ApiKey] = {}
        self._policies: dict[str, list[PolicyVersion]] = {}
        self._active: dict[str, int] = {}
        self._used: dict[str, dict[str, float]] = {}
        """Tenant id → key id → when the key last authenticated a call."""
        self._rails: dict[str, list[RailsConfigVersion]] = {}
        self._audit: list[AuditEntry] = []
        """Ordered by `at`, ties in write order."""
        self._generation = 0
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

    async def delete_tenant(self, tenant_id: str) -> bool:
        for digest in [d for d, k in self._keys.items() if k.tenant_id == tenant_id]:
            del self._keys[digest]
        self._policies.pop(tenant_id, None)
        self._active.pop(tenant_id, None)
        self._used.pop(tenant_id, None)
        return self._tenants.pop(tenant_id, None) is not None

    async def put_key(self, key: ApiKey) -> None:
        if key.key_sha256 in self._keys:
            raise DuplicateKey(key.id)
        self._keys[key.key_sha256] = key

    async def get_key(self, key_sha256: str) -> ApiKey | None:
        return self._keys.get(key_sha256)

    async def list_keys(self, tenant_id: str) -> list[ApiKey]:
        used = self._used.get(tenant_id, {})
        keys = [
            msgspec.structs.replace(k, last_used_at=used.get(k.id, k.last_used_at))
            for k in self._keys.values()
            if k.tenant_id == tenant_id
        ]
        return sorted(keys, key=lambda k: (k.created_at, k.id))

    async def mark_used(self, tenant_id: str, key_id: str, at: float) -> None:
        used = self._used.setdefault(tenant_id, {})
        used[key_id] = max(at, used.get(key_id, 0.0))

    async def revoke_key(self, tenant_id: str, key_id: str, at: float) -> bool:
        for digest, key in self._keys.items():
            if key.tenant_id == tenant_id and key.id == key_id:
                self._keys[digest] = msgspec.structs.replace(key, revoked_at=at)
                return True
        return False

    async def update_key(self, key: ApiKey) -> bool:
        stored = self._keys.get(key.key_sha256)
        if stored is None or (stored.id, stored.tenant_id) != (key.id, key.tenant_id):
            return False
        if stored.revoked_at is not None and key.revoked_at is None:  # revocation sticks
            key = msgspec.structs.replace(key, revoked_at=stored.revoked_at)
        self._keys[key.key_sha256] = key
        return True

    async def add_policy_version(
        self, tenant_id: str, document: dict[str, Any], author: str, at: float
    ) -> PolicyVersion:
        versions = self._policies.setdefault(tenant_id, [])
        policy = PolicyVersion(tenant_id, len(versions) + 1, document, at, author)
        versions.append(policy)
        self._active[tenant_id] = policy.version
        return policy

    async def policy_versions(self, tenant_id: str) -> list[PolicyVersion]:
        return list(self._policies.get(tenant_id, ()))

    async def get_policy_version(self, tenant_id: str, version: int) -> PolicyVersion | None:
        versions = self._policies.get(tenant_id, [])
        return versions[version - 1] if 1 <= version <= len(versions) else None

    async def activate_policy(self, tenant_id: str, version: int) -> bool:
        if await self.get_policy_version(tenant_id, version) is None:
            return False
        self._active[tenant_id] = version
        return True

    async def active_policy(self, tenant_id: str) -> PolicyVersion | None:
        version = self._active.get(tenant_id)
        return None if version is None else await self.get_policy_version(tenant_id, version)

    async def add_rails_config(
        self, name: str, files: dict[str, str], author: str, at: float
    ) -> RailsConfigVersion:
        versions = self._rails.setdefault(name, [])
        config = RailsConfigVersion(name, len(versions) + 1, files, at, author)
        versions.append(config)
        return config

    async def rails_config(
        self, name: str, version: int | None = None
    ) -> RailsConfigVersion | None:
        versions = self._rails.get(name, [])
        if version is None:
            return versions[-1] if versions else None
        return versions[version - 1] if 1 <= version <= len(versions) else None

    async def rails_configs(self) -> list[RailsConfigVersion]:
        return [self._rails[name][-1] for name in sorted(self._rails)]

    async def append_audit(self, entry: AuditEntry) -> None:
        bisect.insort(self._audit, entry, key=_at)

    async def audit_log(self, limit: int = 100, before: float | None = None) -> list[AuditEntry]:
        end = (
            len(self._audit) if before is None else bisect.bisect_left(self._audit, before, key=_at)
        )
        return self._audit[max(0, end - limit) : end][::-1]

    async def generation(self) -> int:
        return self._generation

    async def bump_generation(self) -> int:
        self._generation += 1
        return self._generation


def _at(entry: AuditEntry) -> float:
    return entry.at
