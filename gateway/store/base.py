"""The state store interface and the records it holds.

One store URL picks the implementation: `memory://` for a single process and
`redis://` / `rediss://` for replicas. Both pass `tests/integration/test_store_contract.py`.
Records are msgspec structs; keys are stored only as the SHA-256 of the secret.
A store also carries the rate-limit counters (`store.limits`) and the usage ledger
(`store.ledger`), each behind its own interface.
"""

from __future__ import annotations

from typing import Protocol

import msgspec

from gateway.ledger.backend import Ledger
from gateway.limits.backend import LimitBackend
from gateway.limits.spec import Limits, ModelLimits
from gateway.pricing import ModelPrice

__all__ = ["ApiKey", "DuplicateKey", "Store", "Tenant"]


class Tenant(msgspec.Struct, frozen=True):
    id: str
    name: str = ""
    models: tuple[str, ...] | None = None
    """Allowed models; `None` allows every configured model."""
    disabled: bool = False
    created_at: float = 0.0
    limits: Limits | None = None
    """Rate limits and budgets of the whole tenant."""
    model_limits: dict[str, ModelLimits] | None = None
    """Per-model rate limits of this tenant."""
    prices: dict[str, ModelPrice] | None = None
    """This tenant's own prices per model, instead of the models' list prices."""


class ApiKey(msgspec.Struct, frozen=True):
    id: str
    """Public identifier (`key_…`), safe to log and show."""
    tenant_id: str
    key_sha256: str
    name: str = ""
    prefix: str = ""
    """First characters of the secret, to recognise it in a list."""
    created_at: float = 0.0
    revoked_at: float | None = None
    expires_at: float | None = None
    limits: Limits | None = None
    """This key's own limits, applied on top of its tenant's."""

    def usable(self, now: float) -> bool:
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > now)


class DuplicateKey(Exception):
    """A key with the same hash is already stored."""


class Store(Protocol):
    """Shared state of the gateway. Methods are coroutines and safe to call concurrently."""

    @property
    def limits(self) -> LimitBackend:
        """Counters of rate limits, budgets and pacing, kept in this store."""

    @property
    def ledger(self) -> Ledger:
        """The usage ledger (records and per-tenant totals), kept in this store."""

    async def ping(self) -> bool:
        """True when the backend answers; used by `/readyz`."""

    async def close(self) -> None:
        """Release connections; called once by the app's lifespan."""

    async def put_tenant(self, tenant: Tenant) -> None:
        """Create or replace a tenant."""

    async def get_tenant(self, tenant_id: str) -> Tenant | None: ...

    async def list_tenants(self) -> list[Tenant]:
        """All tenants, ordered by id."""

    async def put_key(self, key: ApiKey) -> None:
        """Store a new key; raise `DuplicateKey` if its hash is already present."""

    async def get_key(self, key_sha256: str) -> ApiKey | None:
        """The key with this hash, revoked or not. This is the authentication lookup."""

    async def list_keys(self, tenant_id: str) -> list[ApiKey]:
        """A tenant's keys, oldest first."""

    async def revoke_key(self, tenant_id: str, key_id: str, at: float) -> bool:
        """Mark a key revoked; False when the tenant has no such key."""
