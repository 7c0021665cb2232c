"""`memory://`: the store in one process's dictionaries. Nothing survives a restart."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import msgspec

from gateway.ledger.memory import MemoryLedger
from gateway.ledger.records import (
    DEFAULT_RETENTION,
    GroupBy,
    Retention,
    UsageRecord,
    UsageTotals,
)
from gateway.limits.memory import MemoryLimits
from gateway.store.base import ApiKey, DuplicateKey, Tenant

__all__ = ["MemoryStore"]


class MemoryStore:
    def __init__(self) -> None:
        self._tenants: dict[str, Tenant] = {}
        self._keys: dict[str, ApiKey] = {}
        self.limits = MemoryLimits()
        self._ledger = MemoryLedger()

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

    async def append_usage(
        self, records: Sequence[UsageRecord], retention: Retention = DEFAULT_RETENTION
    ) -> int:
        return await self._ledger.append_usage(records, retention)

    async def usage_records(
        self, tenant_id: str, from_ts: float, to_ts: float, limit: int = 1000
    ) -> list[UsageRecord]:
        return await self._ledger.usage_records(tenant_id, from_ts, to_ts, limit)

    async def usage_totals(
        self, tenant_id: str, from_day: dt.date, to_day: dt.date, group_by: GroupBy
    ) -> list[UsageTotals]:
        return await self._ledger.usage_totals(tenant_id, from_day, to_day, group_by)
