"""`Admin`: what an admin handler works with, injected as the `admin` dependency.

Handlers stay thin: they validate, call the store, and report each change once through
`Admin.changed`, which appends it to the audit log and bumps the store's generation so
every replica reloads within a second. Reads go to the store itself, never to the
authenticator's cache.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from litestar import Request

from gateway.admin.auth import actor_of
from gateway.config import Settings
from gateway.errors import NotFound
from gateway.policies import TenantPolicies
from gateway.proxy import Proxy
from gateway.reload import Reloader
from gateway.store.base import AuditEntry, Store, Tenant
from gateway.tenancy import Authenticator
from rails import GuardRegistry

__all__ = ["Admin", "admin_context"]


@dataclass(frozen=True, slots=True)
class Admin:
    store: Store
    settings: Settings
    auth: Authenticator
    """Tenants and keys of the config file merged with the store (the file wins)."""
    registry: GuardRegistry | None
    """Builds policies' pipelines; None when the app was given its content stages."""
    policies: TenantPolicies | None
    """Each tenant's policy as the data plane runs it (`file_policy`: the config's)."""
    reloader: Reloader | None
    """Reloads this replica right after a change (others follow the change counter)."""
    actor: str
    """Id of the admin key making the call, as written to the audit log."""

    def in_file(self, tenant_id: str) -> bool:
        """The tenant is defined in the config file (read-only through the API)."""
        return tenant_id in self.auth.file_tenants

    async def tenant(self, tenant_id: str) -> Tenant:
        """The tenant (file or store, never a cached copy); 404 when there is none."""
        tenant = self.auth.file_tenants.get(tenant_id) or await self.store.get_tenant(tenant_id)
        if tenant is None:
            raise NotFound("Unknown tenant.", param="tenant_id")
        return tenant

    async def changed(self, action: str, target: str, **details: Any) -> None:
        """Record a change in the audit log and tell every replica to reload (this one
        forgets its cached keys and tenants at once, the others within a second).
        `details` are ids, field names and counts: never a secret or a policy's text."""
        entry = AuditEntry(
            at=time.time(), actor=self.actor, action=action, target=target, details=details
        )
        await self.store.append_audit(entry)
        await self.store.bump_generation()
        self.auth.invalidate()
        if self.reloader is not None:  # this replica at once; the others poll
            await self.reloader.check()


def admin_context(request: Request[Any, Any, Any]) -> Admin:
    state = request.app.state
    proxy: Proxy = state.proxy
    return Admin(
        store=state.store,
        settings=state.settings,
        auth=proxy.auth,
        registry=state.registry,
        policies=state.policies,
        reloader=state.reloader,
        actor=actor_of(request),
    )
