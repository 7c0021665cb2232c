"""`redis://` / `rediss://`: the store shared by every worker and replica.

Key layout (`P` is the prefix, `rg` unless the URL says `?prefix=`):

    P:tenants                 set of tenant ids
    P:{<tenant>}:tenant       tenant record (JSON)
    P:{<tenant>}:keys         hash key id -> key sha256
    P:key:<sha256>            key record (JSON); the authentication lookup

    P:{<tenant>}:rl:…         rate-limit windows, leases, budgets (`gateway.limits.plan`)
    P:{provider:<name>}:pace:… a provider's pacing windows

    P:{<tenant>}:usage:…      the usage ledger: log stream, dedupe sets, day totals
                              (`gateway.ledger.redis`)

`{<tenant>}` is a Redis Cluster hash tag: everything of one tenant shares a slot,
so per-tenant Lua scripts touch a single slot. Redis Cluster: add `cluster=true` to
the URL (`redis://node1:7000/0?cluster=true`); the client discovers the other nodes.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import msgspec
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisClusterException, RedisError

from gateway.ledger.redis import RedisLedger
from gateway.limits.batch import AutoPipeline
from gateway.limits.redis import RedisLimits
from gateway.limits.resp import RespClient
from gateway.store.base import ApiKey, DuplicateKey, Tenant

__all__ = ["RedisStore", "split_url"]

_tenant_dec = msgspec.json.Decoder(Tenant)
_key_dec = msgspec.json.Decoder(ApiKey)
_enc = msgspec.json.Encoder()


_OURS = ("prefix", "cluster")
LEDGER_DEADLINE_S = 2.0
"""Deadline of one ledger append (the sink retries; appends are idempotent)."""


def split_url(url: str) -> tuple[str, str, bool]:
    """Remove our query parameters (`prefix`, `cluster`); return (url, prefix, cluster)."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    ours = {k: v for k, v in query if k in _OURS}
    rest = urlencode([(k, v) for k, v in query if k not in _OURS])
    cluster = ours.get("cluster", "").lower() in ("1", "true", "yes")
    return urlunsplit(parts._replace(query=rest)), ours.get("prefix") or "rg", cluster


class RedisStore:
    def __init__(self, client: aioredis.Redis | RedisCluster, prefix: str = "rg") -> None:
        self._r = client
        self.prefix = prefix
        # Two lean connections: the ledger's long appends never queue ahead of an
        # admission on the same socket.
        self._fast = [_fast_client(client), _fast_client(client)]
        self.limits = RedisLimits(client, prefix, AutoPipeline(client, fast=self._fast[0]))
        ledger_scripts = AutoPipeline(client, deadline_s=LEDGER_DEADLINE_S, fast=self._fast[1])
        self.ledger = RedisLedger(client, prefix, ledger_scripts)

    @classmethod
    def from_url(cls, url: str) -> RedisStore:
        bare, prefix, cluster = split_url(url)
        options: dict[str, Any] = {"socket_connect_timeout": 2, "socket_timeout": 5}
        if cluster:
            return cls(RedisCluster.from_url(bare, **options), prefix)
        client = aioredis.Redis.from_url(bare, health_check_interval=30, **options)
        return cls(client, prefix)

    def _tenant(self, tenant_id: str) -> str:
        return f"{self.prefix}:{{{tenant_id}}}:tenant"

    def _tenant_keys(self, tenant_id: str) -> str:
        return f"{self.prefix}:{{{tenant_id}}}:keys"

    def _key(self, digest: str) -> str:
        return f"{self.prefix}:key:{digest}"

    async def ping(self) -> bool:
        try:
            return bool(await self._r.ping())
        except (RedisError, RedisClusterException, OSError):
            return False

    async def close(self) -> None:
        for fast in self._fast:
            if fast is not None:
                fast.close()
        await self._r.aclose()

    async def put_tenant(self, tenant: Tenant) -> None:
        await self._r.set(self._tenant(tenant.id), _enc.encode(tenant))
        await self._r.sadd(f"{self.prefix}:tenants", tenant.id)

    async def get_tenant(self, tenant_id: str) -> Tenant | None:
        raw = await self._r.get(self._tenant(tenant_id))
        return None if raw is None else _tenant_dec.decode(raw)

    async def list_tenants(self) -> list[Tenant]:
        members: set[bytes] = await self._r.smembers(f"{self.prefix}:tenants")  # type: ignore[assignment]
        ids = sorted(m.decode() for m in members)
        found = [await self.get_tenant(i) for i in ids]
        return [t for t in found if t is not None]

    async def put_key(self, key: ApiKey) -> None:
        if not await self._r.set(self._key(key.key_sha256), _enc.encode(key), nx=True):
            raise DuplicateKey(key.id)
        await self._r.hset(self._tenant_keys(key.tenant_id), key.id, key.key_sha256)

    async def get_key(self, key_sha256: str) -> ApiKey | None:
        raw = await self._r.get(self._key(key_sha256))
        return None if raw is None else _key_dec.decode(raw)

    async def list_keys(self, tenant_id: str) -> list[ApiKey]:
        digests: dict[Any, Any] = await self._r.hgetall(self._tenant_keys(tenant_id))
        found = [await self.get_key(d.decode()) for d in digests.values()]
        return sorted((k for k in found if k is not None), key=lambda k: (k.created_at, k.id))

    async def revoke_key(self, tenant_id: str, key_id: str, at: float) -> bool:
        digest: bytes | None = await self._r.hget(self._tenant_keys(tenant_id), key_id)  # type: ignore[assignment]
        if digest is None:
            return False
        key = await self.get_key(digest.decode())
        if key is None:
            return False
        await self._r.set(
            self._key(key.key_sha256), _enc.encode(msgspec.structs.replace(key, revoked_at=at))
        )
        return True


def _fast_client(client: aioredis.Redis | RedisCluster) -> RespClient | None:
    """The limiter's lean connection to the same server, for plain TCP `redis://` only."""
    if not isinstance(client, aioredis.Redis):
        return None
    pool = client.connection_pool
    if pool.connection_class is not aioredis.Connection:  # TLS, unix socket: redis-py
        return None
    kwargs = pool.connection_kwargs
    return RespClient(
        kwargs.get("host", "localhost"),
        int(kwargs.get("port", 6379)),
        int(kwargs.get("db", 0) or 0),
        kwargs.get("username"),
        kwargs.get("password"),
    )
