"""First start: make sure a newcomer has a tenant and a key to call with."""

from __future__ import annotations

import time

from gateway.config import Settings
from gateway.keys import new_key
from gateway.store.base import Store, Tenant

__all__ = ["DEMO_TENANT", "ensure_demo_tenant"]

DEMO_TENANT = "demo"


async def ensure_demo_tenant(settings: Settings, store: Store) -> str | None:
    """When neither the config nor the store holds any tenant, create `demo` with one key
    and return its secret (to print once); otherwise return None and change nothing."""
    if settings.tenants or await store.list_tenants():
        return None
    await store.put_tenant(Tenant(id=DEMO_TENANT, name="Demo tenant", created_at=time.time()))
    secret, record = new_key(DEMO_TENANT, name="demo")
    await store.put_key(record)
    return secret
