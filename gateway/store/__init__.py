"""State stores: pick one by URL with `open_store()`."""

from __future__ import annotations

from gateway.store.base import ApiKey, DuplicateKey, Store, Tenant
from gateway.store.memory import MemoryStore
from gateway.store.redis import RedisStore

__all__ = ["ApiKey", "DuplicateKey", "MemoryStore", "RedisStore", "Store", "Tenant", "open_store"]


def open_store(url: str) -> Store:
    """`memory://` → `MemoryStore`; `redis://` / `rediss://` (optional `?prefix=`) → `RedisStore`."""
    if url.startswith("memory://"):
        return MemoryStore()
    if url.startswith(("redis://", "rediss://")):
        return RedisStore.from_url(url)
    raise ValueError("store URL must start with memory://, redis:// or rediss://")
