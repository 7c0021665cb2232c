"""`redis://` / `rediss://`: the store shared by every worker and replica.

Key layout (`P` is the prefix, `rg` unless the URL says `?prefix=`):

    P:tenants                 set of tenant ids
    P:{<tenant>}:tenant       tenant record (JSON)
    P:{<tenant>}:keys         hash key id -> key sha256
    P:{<tenant>}:keys:used    hash key id -> when it last authenticated a call
    P:{<tenant>}:policies     list of the tenant's policy versions (JSON); version n at
                              index n - 1, so `RPUSH` numbers them
    P:{<tenant>}:policy       the number of the active policy version
    P:key:<sha256>            key record (JSON); the authentication lookup

    P:rails                   set of rails config names
    P:rails:<name>            list of that config's versions (JSON), as policies are
    P:audit                   sorted set of audit entries by `at`; a member is a
                              12-digit write sequence and the entry's JSON
    P:generation              the change counter (`INCR`)

    P:{<tenant>}:rl:…         rate-limit windows, leases, budgets (`gateway.limits.plan`)
    P:{provider:<name>}:pace:… a provider's pacing windows

    P:{<tenant>}:usage:…      the usage ledger: log stream, dedupe sets, day totals
                              (`gateway.ledger.redis`)

`{<tenant>}` is a Redis Cluster hash tag: everything of one tenant shares a slot,
so per-tenant Lua scripts touch a single slot. Global keys (`P:rails…`, `P:audit`,
`P:generation`) are each written alone, never in a script with another key.
Redis Cluster: add `cluster=true` to the URL (`redis://node1:7000/0?cluster=true`);
the client discovers the other nodes.
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
from gateway.store.base import (
    ApiKey,
    AuditEntry,
    DuplicateKey,
    PolicyVersion,
    RailsConfigVersion,
    Tenant,
)

__all__ = ["RedisStore", "split_url"]


class _StoredPolicy(msgspec.Struct, frozen=True):
    """A policy version in its tenant's list (its place there is its number)."""

    document: dict[str, Any]
    created_at: float
    author: str


class _StoredRails(msgspec.Struct, frozen=True):
    """A rails config version in its name's list (its place there is its number)."""

    files: dict[str, str]
    created_at: float
    author: str


_tenant_dec = msgspec.json.Decoder(Tenant)
_key_dec = msgspec.json.Decoder(ApiKey)
_policy_dec = msgspec.json.Decoder(_StoredPolicy)
_rails_dec = msgspec.json.Decoder(_StoredRails)
_audit_dec = msgspec.json.Decoder(AuditEntry)
_enc = msgspec.json.Encoder()

ADD_POLICY = """
local n = redis.call('RPUSH', KEYS[1], ARGV[1])
redis.call('SET', KEYS[2], n)
return n
"""
"""KEYS: the tenant's policies, its active version. ARGV: the new version's JSON."""

ACTIVATE_POLICY = """
local n = tonumber(ARGV[1])
if n < 1 or n > redis.call('LLEN', KEYS[1]) then
  return 0
end
redis.call('SET', KEYS[2], n)
return 1
"""
"""KEYS: the tenant's policies, its active version. ARGV: the version to activate."""

APPEND_AUDIT = """
local seq = redis.call('ZCARD', KEYS[1]) + 1
redis.call('ZADD', KEYS[1], ARGV[1], string.format('%012d', seq) .. ARGV[2])
"""
"""KEYS: the audit log. ARGV: the entry's `at`, its JSON. Entries are never removed, so
the count is a sequence: members stay unique and equal times read newest-written first."""
_SEQ = 12


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
        self._add_policy = client.register_script(ADD_POLICY)
        self._activate_policy = client.register_script(ACTIVATE_POLICY)
        self._append_audit = client.register_script(APPEND_AUDIT)

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

    def _keys_used(self, tenant_id: str) -> str:
        return f"{self.prefix}:{{{tenant_id}}}:keys:used"

    def _policies(self, tenant_id: str) -> str:
        return f"{self.prefix}:{{{tenant_id}}}:policies"

    def _active(self, tenant_id: str) -> str:
        return f"{self.prefix}:{{{tenant_id}}}:policy"

    def _key(self, digest: str) -> str:
        return f"{self.prefix}:key:{digest}"

    def _rails(self, name: str) -> str:
        return f"{self.prefix}:rails:{name}"

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
        used: dict[bytes, bytes] = await self._r.hgetall(self._keys_used(tenant_id))  # type: ignore[assignment]
        found = [await self.get_key(d.decode()) for d in digests.values()]
        keys = [
            msgspec.structs.replace(k, last_used_at=float(used[k.id.encode()]))
            if k.id.encode() in used
            else k
            for k in found
            if k is not None
        ]
        return sorted(keys, key=lambda k: (k.created_at, k.id))

    async def mark_used(self, tenant_id: str, key_id: str, at: float) -> None:
        await self._r.hset(self._keys_used(tenant_id), key_id, repr(at))

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

    async def update_key(self, key: ApiKey) -> bool:
        stored = await self.get_key(key.key_sha256)
        if stored is None or (stored.id, stored.tenant_id) != (key.id, key.tenant_id):
            return False
        if stored.revoked_at is not None and key.revoked_at is None:  # revocation sticks
            key = msgspec.structs.replace(key, revoked_at=stored.revoked_at)
        # XX: a key deleted meanwhile (with its tenant) is not brought back.
        return bool(await self._r.set(self._key(key.key_sha256), _enc.encode(key), xx=True))

    async def delete_tenant(self, tenant_id: str) -> bool:
        # Key records go first, so the tenant's keys stop authenticating before the rest.
        digests: list[bytes] = await self._r.hvals(self._tenant_keys(tenant_id))  # type: ignore[assignment]
        if digests:
            await self._r.delete(*(self._key(d.decode()) for d in digests))
        existed = await self._r.delete(self._tenant(tenant_id))
        await self._r.delete(
            self._tenant_keys(tenant_id),
            self._keys_used(tenant_id),
            self._policies(tenant_id),
            self._active(tenant_id),
        )
        await self._r.srem(f"{self.prefix}:tenants", tenant_id)
        return bool(existed)

    async def add_policy_version(
        self, tenant_id: str, document: dict[str, Any], author: str, at: float
    ) -> PolicyVersion:
        stored = _enc.encode(_StoredPolicy(document, at, author))
        keys = [self._policies(tenant_id), self._active(tenant_id)]
        version = int(await self._add_policy(keys, [stored]))
        return PolicyVersion(tenant_id, version, document, at, author)

    async def policy_versions(self, tenant_id: str) -> list[PolicyVersion]:
        stored = await self._r.lrange(self._policies(tenant_id), 0, -1)
        return [_policy(tenant_id, n, raw) for n, raw in enumerate(stored, 1)]

    async def get_policy_version(self, tenant_id: str, version: int) -> PolicyVersion | None:
        if version < 1:
            return None
        raw = await self._r.lindex(self._policies(tenant_id), version - 1)
        return None if raw is None else _policy(tenant_id, version, raw)

    async def activate_policy(self, tenant_id: str, version: int) -> bool:
        keys = [self._policies(tenant_id), self._active(tenant_id)]
        return bool(await self._activate_policy(keys, [version]))

    async def active_policy(self, tenant_id: str) -> PolicyVersion | None:
        version = await self._r.get(self._active(tenant_id))
        return None if version is None else await self.get_policy_version(tenant_id, int(version))

    async def add_rails_config(
        self, name: str, files: dict[str, str], author: str, at: float
    ) -> RailsConfigVersion:
        # The name first: a failure in between lists a name without versions, which
        # `rails_configs` skips, never a version that is not listed.
        await self._r.sadd(f"{self.prefix}:rails", name)
        stored = _enc.encode(_StoredRails(files, at, author))
        version = int(await self._r.rpush(self._rails(name), stored))
        return RailsConfigVersion(name, version, files, at, author)

    async def rails_config(
        self, name: str, version: int | None = None
    ) -> RailsConfigVersion | None:
        if version is None:  # versions are never removed: the last is the count
            version = int(await self._r.llen(self._rails(name)))
        if version < 1:
            return None
        raw = await self._r.lindex(self._rails(name), version - 1)
        return None if raw is None else _rails(name, version, raw)

    async def rails_configs(self) -> list[RailsConfigVersion]:
        names: set[bytes] = await self._r.smembers(f"{self.prefix}:rails")  # type: ignore[assignment]
        found = [await self.rails_config(n.decode()) for n in sorted(names)]
        return [c for c in found if c is not None]

    async def append_audit(self, entry: AuditEntry) -> None:
        await self._append_audit([f"{self.prefix}:audit"], [entry.at, _enc.encode(entry)])

    async def audit_log(self, limit: int = 100, before: float | None = None) -> list[AuditEntry]:
        if limit < 1:
            return []
        newest = "+inf" if before is None else f"({before!r}"
        members: list[bytes] = await self._r.zrevrangebyscore(
            f"{self.prefix}:audit", newest, "-inf", start=0, num=limit
        )  # type: ignore[assignment]
        return [_audit_dec.decode(m[_SEQ:]) for m in members]

    async def generation(self) -> int:
        return int(await self._r.get(f"{self.prefix}:generation") or 0)

    async def bump_generation(self) -> int:
        return int(await self._r.incr(f"{self.prefix}:generation"))


def _policy(tenant_id: str, version: int, raw: bytes | str) -> PolicyVersion:
    stored = _policy_dec.decode(raw)
    return PolicyVersion(tenant_id, version, stored.document, stored.created_at, stored.author)


def _rails(name: str, version: int, raw: bytes | str) -> RailsConfigVersion:
    stored = _rails_dec.decode(raw)
    return RailsConfigVersion(name, version, stored.files, stored.created_at, stored.author)


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
