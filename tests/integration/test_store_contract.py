"""One contract, two stores: `memory://` and real Redis behave the same."""

from __future__ import annotations

import time

import msgspec
import pytest

from gateway.keys import hash_key, new_key
from gateway.store import DuplicateKey, MemoryStore, Store, Tenant, open_store
from gateway.store.redis import RedisStore, split_url


@pytest.fixture(params=["memory", "redis"])
async def store(request, redis_store) -> Store:
    if request.param == "memory":
        return MemoryStore()
    return redis_store


async def test_ping(store):
    assert await store.ping() is True


async def test_tenants_roundtrip_and_list_sorted(store):
    assert await store.list_tenants() == []
    assert await store.get_tenant("acme") is None
    b = Tenant(id="bravo", name="Bravo", models=("mock-1",), created_at=2.0)
    a = Tenant(id="acme", name="Acme", created_at=1.0)
    await store.put_tenant(b)
    await store.put_tenant(a)
    assert await store.get_tenant("bravo") == b
    assert [t.id for t in await store.list_tenants()] == ["acme", "bravo"]
    renamed = msgspec.structs.replace(a, name="Acme Ltd", disabled=True)
    await store.put_tenant(renamed)
    assert await store.get_tenant("acme") == renamed
    assert len(await store.list_tenants()) == 2


async def test_keys_are_found_by_hash_only(store):
    secret, record = new_key("acme", name="ci")
    await store.put_key(record)
    assert record.key_sha256 == hash_key(secret)
    assert secret not in msgspec.json.encode(record).decode()
    assert await store.get_key(hash_key(secret)) == record
    assert await store.get_key(hash_key(secret + "x")) is None
    with pytest.raises(DuplicateKey):
        await store.put_key(msgspec.structs.replace(record, id="key_other"))


async def test_list_and_revoke_keys(store):
    _, first = new_key("acme", name="one")
    _, second = new_key("acme", name="two")
    _, other = new_key("bravo")
    second = msgspec.structs.replace(second, created_at=first.created_at + 1)
    for key in (second, first, other):
        await store.put_key(key)
    assert [k.id for k in await store.list_keys("acme")] == [first.id, second.id]
    assert await store.revoke_key("acme", other.id, at=time.time()) is False  # other tenant's key
    assert await store.revoke_key("acme", "key_missing", at=time.time()) is False
    assert await store.revoke_key("acme", first.id, at=123.0) is True
    revoked = await store.get_key(first.key_sha256)
    assert revoked is not None and revoked.revoked_at == 123.0 and not revoked.usable(time.time())
    assert (await store.get_key(second.key_sha256)).usable(time.time())
    assert (await store.get_key(other.key_sha256)).revoked_at is None


async def test_expired_key_is_not_usable(store):
    _, key = new_key("acme", expires_at=time.time() - 1)
    await store.put_key(key)
    found = await store.get_key(key.key_sha256)
    assert found is not None and not found.usable(time.time())


async def test_redis_keys_carry_tenant_hash_tag(redis_store):
    _, key = new_key("acme")
    await redis_store.put_tenant(Tenant(id="acme"))
    await redis_store.put_key(key)
    names = sorted(
        [k.decode() async for k in redis_store._r.scan_iter(match=f"{redis_store.prefix}:*")]
    )
    tagged = [n for n in names if "{acme}" in n]
    assert f"{redis_store.prefix}:{{acme}}:tenant" in tagged
    assert f"{redis_store.prefix}:{{acme}}:keys" in tagged
    assert f"{redis_store.prefix}:key:{key.key_sha256}" in names


def test_open_store_by_url():
    assert isinstance(open_store("memory://"), MemoryStore)
    assert isinstance(open_store("redis://127.0.0.1:6379/0?prefix=x"), RedisStore)
    with pytest.raises(ValueError):
        open_store("mysql://db")
    assert split_url("redis://h:1/2?prefix=abc&ssl_cert_reqs=none") == (
        "redis://h:1/2?ssl_cert_reqs=none",
        "abc",
        False,
    )
    assert split_url("redis://h:1/2") == ("redis://h:1/2", "rg", False)
    assert split_url("redis://h:1/0?cluster=true&prefix=p") == ("redis://h:1/0", "p", True)


async def test_redis_unreachable_ping_is_false():
    store = RedisStore.from_url("redis://127.0.0.1:1/0")
    try:
        assert await store.ping() is False
    finally:
        await store.close()
