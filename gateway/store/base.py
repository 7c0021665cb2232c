"""The state store interface and the records it holds.

One store URL picks the implementation: `memory://` for a single process and
`redis://` / `rediss://` for replicas. Both pass `tests/integration/test_store_contract.py`.
Records are msgspec structs; keys are stored only as the SHA-256 of the secret.
A store also carries the rate-limit counters (`store.limits`) and the usage ledger
(`store.ledger`), each behind its own interface.
"""

from __future__ import annotations

from typing import Any, Protocol

import msgspec

from gateway.config import LangfuseSettings
from gateway.ledger.backend import Ledger
from gateway.limits.backend import LimitBackend
from gateway.limits.spec import Limits, ModelLimits
from gateway.pricing import ModelPrice

__all__ = [
    "ApiKey",
    "AuditEntry",
    "DuplicateKey",
    "PolicyVersion",
    "RailsConfigVersion",
    "Store",
    "Tenant",
]


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
    langfuse: LangfuseSettings | None = None
    """This tenant's own Langfuse project."""
    metadata: dict[str, str] | None = None
    """Free-form labels for the operator (never used for decisions)."""
    updated_at: float = 0.0


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
    last_used_at: float | None = None
    """When the key last authenticated a call (recorded at most once a minute)."""
    replaced_by: str | None = None
    """The id of the key that replaced this one in a rotation."""

    def usable(self, now: float) -> bool:
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > now)


class PolicyVersion(msgspec.Struct, frozen=True):
    """One accepted version of a tenant's rails policy (versions count from 1)."""

    tenant_id: str
    version: int
    document: dict[str, Any]
    """The policy as accepted (`rails.policy` schema)."""
    created_at: float
    author: str
    """Admin key id that set it."""


class RailsConfigVersion(msgspec.Struct, frozen=True):
    """One uploaded version of a NeMo Guardrails config (versions count from 1)."""

    name: str
    version: int
    files: dict[str, str]
    """File name (`config.yml`, `*.co`, `*.py`, …) → content."""
    created_at: float
    author: str


class AuditEntry(msgspec.Struct, frozen=True):
    """One change made through the admin API: who, when, what. Never a secret."""

    at: float
    actor: str
    """Admin key id (`env` for `RAILGATE_ADMIN_KEY`)."""
    action: str
    """e.g. `tenant.create`, `key.revoke`, `policy.set`, `user.erase`."""
    target: str
    """What was changed: a tenant id, `<tenant>/<key id>`, a rails config name."""
    details: dict[str, Any] = {}
    """Changed fields and counts; ids only, never keys, prompts or policies' secrets."""


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
        """A tenant's keys, oldest first, with `last_used_at` filled in."""

    async def revoke_key(self, tenant_id: str, key_id: str, at: float) -> bool:
        """Mark a key revoked; False when the tenant has no such key."""

    async def mark_used(self, tenant_id: str, key_id: str, at: float) -> None:
        """Record when a key last authenticated a call (`ApiKey.last_used_at` in
        `list_keys`); kept apart from the key record, so it never races a revocation."""

    async def update_key(self, key: ApiKey) -> bool:
        """Replace a stored key (same id and hash), e.g. a new `expires_at` or
        `last_used_at`; False when there is no such key."""

    async def delete_tenant(self, tenant_id: str) -> bool:
        """Remove a tenant with its keys and policy versions (its usage stays in the
        ledger until retention ends); False when there was no such tenant."""

    async def add_policy_version(
        self, tenant_id: str, document: dict[str, Any], author: str, at: float
    ) -> PolicyVersion:
        """Store a new version of a tenant's policy (the next number) and make it the
        active one."""

    async def policy_versions(self, tenant_id: str) -> list[PolicyVersion]:
        """Every version of a tenant's policy, oldest first."""

    async def get_policy_version(self, tenant_id: str, version: int) -> PolicyVersion | None: ...

    async def activate_policy(self, tenant_id: str, version: int) -> bool:
        """Make an existing version the active one (a rollback); False if unknown."""

    async def active_policy(self, tenant_id: str) -> PolicyVersion | None:
        """The tenant's active policy version; None: the tenant has none in the store."""

    async def add_rails_config(
        self, name: str, files: dict[str, str], author: str, at: float
    ) -> RailsConfigVersion:
        """Store a new version of a NeMo rails config (the next number for `name`)."""

    async def rails_config(
        self, name: str, version: int | None = None
    ) -> RailsConfigVersion | None:
        """A version of a rails config (None: the latest)."""

    async def rails_configs(self) -> list[RailsConfigVersion]:
        """The latest version of every stored rails config, ordered by name."""

    async def append_audit(self, entry: AuditEntry) -> None:
        """Add a change to the audit log (kept for good)."""

    async def audit_log(self, limit: int = 100, before: float | None = None) -> list[AuditEntry]:
        """The newest entries first, at most `limit`, older than `before` if given."""

    async def generation(self) -> int:
        """A counter every admin change bumps: replicas poll it to reload (hot reload)."""

    async def bump_generation(self) -> int:
        """Increment the change counter; returns the new value."""
