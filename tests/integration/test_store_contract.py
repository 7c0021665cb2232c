"""One contract, two stores: `memory://` and real Redis behave the same."""

from __future__ import annotations

import asyncio
import time

import msgspec
import pytest

from gateway.config import LangfuseSettings
from gateway.keys import hash_key, new_key
from gateway.store import DuplicateKey, MemoryStore, Store, Tenant, open_store
from gateway.store.base import AuditEntry
from gateway.store.redis import RedisStore, split_url
from tests.integration.test_redis_cluster import cluster_port, cluster_store  # noqa: F401


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


async def test_tenant_new_fields_roundtrip(store):
    tenant = Tenant(
        id="acme",
        langfuse=LangfuseSettings(host="http://langfuse:3000", send_content=False),
        metadata={"team": "search"},
        updated_at=7.5,
    )
    await store.put_tenant(tenant)
    assert await store.get_tenant("acme") == tenant


async def test_update_key_replaces_only_a_stored_key(store):
    _, key = new_key("acme")
    assert await store.update_key(key) is False  # not stored yet
    await store.put_key(key)
    used = msgspec.structs.replace(key, last_used_at=50.0, expires_at=99.0, replaced_by="key_new")
    assert await store.update_key(used) is True
    assert await store.get_key(key.key_sha256) == used
    assert [k.last_used_at for k in await store.list_keys("acme")] == [50.0]
    assert await store.update_key(msgspec.structs.replace(used, id="key_other")) is False
    assert await store.update_key(msgspec.structs.replace(used, tenant_id="bravo")) is False
    assert await store.get_key(key.key_sha256) == used


async def test_mark_used_shows_in_the_key_list_only(store):
    _, key = new_key("acme")
    _, other = new_key("acme")
    await store.put_key(key)
    await store.put_key(other)
    await store.mark_used("acme", key.id, 1_700_000_000.25)
    await store.mark_used("acme", key.id, 1_700_000_060.5)
    listed = {k.id: k.last_used_at for k in await store.list_keys("acme")}
    assert listed == {key.id: 1_700_000_060.5, other.id: None}
    assert (await store.get_key(key.key_sha256)) == key  # the record itself is untouched
    await store.revoke_key("acme", key.id, 5.0)
    await store.mark_used("acme", key.id, 1_700_000_120.0)  # never undoes a revocation
    stored = await store.get_key(key.key_sha256)
    assert stored is not None and stored.revoked_at == 5.0


async def test_delete_tenant_removes_its_keys_and_policies(store):
    _, mine = new_key("acme")
    _, theirs = new_key("bravo")
    for tenant_id, key in (("acme", mine), ("bravo", theirs)):
        await store.put_tenant(Tenant(id=tenant_id))
        await store.put_key(key)
        await store.add_policy_version(tenant_id, {"rails": []}, "adm", 1.0)
    assert await store.delete_tenant("acme") is True
    assert await store.get_tenant("acme") is None
    assert [t.id for t in await store.list_tenants()] == ["bravo"]
    assert await store.get_key(mine.key_sha256) is None  # no longer authenticates
    assert await store.list_keys("acme") == []
    assert await store.policy_versions("acme") == []
    assert await store.active_policy("acme") is None
    assert await store.update_key(mine) is False
    assert await store.delete_tenant("acme") is False
    assert await store.get_key(theirs.key_sha256) == theirs  # the other tenant is untouched
    assert (await store.active_policy("bravo")).version == 1


async def test_policy_versions_count_from_one_and_the_newest_is_active(store):
    assert await store.policy_versions("acme") == []
    assert await store.active_policy("acme") is None
    first = await store.add_policy_version("acme", {"input": ["pii"]}, "key_adm1", 10.0)
    second = await store.add_policy_version("acme", {"input": ["pii", "nemo"]}, "env", 20.0)
    assert (first.tenant_id, first.version, first.document, first.created_at, first.author) == (
        "acme", 1, {"input": ["pii"]}, 10.0, "key_adm1",
    )  # fmt: skip
    assert second.version == 2
    assert await store.policy_versions("acme") == [first, second]
    assert await store.get_policy_version("acme", 1) == first
    assert await store.active_policy("acme") == second
    other = await store.add_policy_version("bravo", {}, "env", 30.0)
    assert other.version == 1  # numbered per tenant


async def test_activate_policy_rolls_back_and_forward(store):
    first = await store.add_policy_version("acme", {"v": 1}, "env", 1.0)
    second = await store.add_policy_version("acme", {"v": 2}, "env", 2.0)
    assert await store.activate_policy("acme", 1) is True
    assert await store.active_policy("acme") == first
    assert await store.activate_policy("acme", 2) is True
    assert await store.active_policy("acme") == second
    third = await store.add_policy_version("acme", {"v": 3}, "env", 3.0)
    assert await store.active_policy("acme") == third


@pytest.mark.parametrize("version", [0, -1, 3])
async def test_unknown_policy_version(store, version):
    await store.add_policy_version("acme", {"v": 1}, "env", 1.0)
    await store.add_policy_version("acme", {"v": 2}, "env", 2.0)
    assert await store.get_policy_version("acme", version) is None
    assert await store.activate_policy("acme", version) is False
    assert (await store.active_policy("acme")).version == 2
    assert await store.activate_policy("bravo", 1) is False
    assert await store.active_policy("bravo") is None


async def test_concurrent_policy_versions_get_distinct_numbers(store):
    added = await asyncio.gather(
        *(store.add_policy_version("acme", {"n": i}, f"adm{i}", float(i)) for i in range(20))
    )
    assert sorted(p.version for p in added) == list(range(1, 21))
    stored = await store.policy_versions("acme")
    assert sorted(stored, key=lambda p: p.author) == sorted(added, key=lambda p: p.author)
    assert [p.version for p in stored] == list(range(1, 21))
    assert (await store.active_policy("acme")).version == 20  # the last number wins


async def test_rails_config_versions_and_latest(store):
    assert await store.rails_config("strict") is None
    assert await store.rails_configs() == []
    v1 = await store.add_rails_config("strict", {"config.yml": "models: []"}, "env", 1.0)
    v2 = await store.add_rails_config(
        "strict", {"config.yml": "models: []", "flows.co": "define flow x"}, "key_adm", 2.0
    )
    loose = await store.add_rails_config("loose", {"config.yml": "rails: {}"}, "env", 3.0)
    assert (v1.name, v1.version, v2.version, loose.version) == ("strict", 1, 2, 1)
    assert v2.files == {"config.yml": "models: []", "flows.co": "define flow x"}
    assert await store.rails_config("strict") == v2
    assert await store.rails_config("strict", 1) == v1
    assert await store.rails_config("strict", 3) is None
    assert await store.rails_config("strict", 0) is None
    assert await store.rails_config("missing", 1) is None
    assert await store.rails_configs() == [loose, v2]


async def test_audit_log_newest_first_with_limit_and_before(store):
    assert await store.audit_log() == []
    entries = [
        AuditEntry(at=100.0 + i, actor="env", action="tenant.create", target=f"t{i}",
                   details={"fields": ["name"], "n": i})
        for i in range(5)
    ]  # fmt: skip
    for entry in entries:
        await store.append_audit(entry)
    assert await store.audit_log() == entries[::-1]
    assert await store.audit_log(limit=2) == [entries[4], entries[3]]
    assert await store.audit_log(limit=2, before=103.0) == [entries[2], entries[1]]
    assert await store.audit_log(before=100.0) == []
    assert await store.audit_log(limit=0) == []


async def test_audit_entries_at_the_same_time_are_all_kept(store):
    same = [AuditEntry(at=5.0, actor="env", action="key.revoke", target="acme/k")] * 2
    later = AuditEntry(at=6.0, actor="env", action="key.create", target="acme/k")
    earlier = AuditEntry(at=4.0, actor="env", action="tenant.create", target="acme")
    for entry in (*same, later, earlier):  # written out of time order
        await store.append_audit(entry)
    assert await store.audit_log() == [later, *same, earlier]


async def test_generation_counts_up_from_zero(store):
    assert await store.generation() == 0
    assert await store.bump_generation() == 1
    assert await store.bump_generation() == 2
    assert await store.generation() == 2
    bumped = await asyncio.gather(*(store.bump_generation() for _ in range(10)))
    assert sorted(bumped) == list(range(3, 13))
    assert await store.generation() == 12


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


async def test_redis_layout_of_policies_and_global_state(redis_store):
    p = redis_store.prefix
    await redis_store.add_policy_version("acme", {"v": 1}, "env", 1.0)
    await redis_store.add_rails_config("strict", {"config.yml": ""}, "env", 1.0)
    await redis_store.append_audit(AuditEntry(at=1.0, actor="env", action="x", target="acme"))
    await redis_store.bump_generation()
    names = sorted([k.decode() async for k in redis_store._r.scan_iter(match=f"{p}:*")])
    assert names == sorted(
        [
            f"{p}:{{acme}}:policies",
            f"{p}:{{acme}}:policy",
            f"{p}:rails",
            f"{p}:rails:strict",
            f"{p}:audit",
            f"{p}:generation",
        ]
    )
    await redis_store.delete_tenant("acme")
    names = sorted([k.decode() async for k in redis_store._r.scan_iter(match=f"{p}:*")])
    assert not [n for n in names if "{acme}" in n]


async def test_admin_state_works_on_redis_cluster(cluster_store):  # noqa: F811 (a fixture)
    """Scripts touch one slot each; deleting a tenant spans slots without CROSSSLOT."""
    keys = [new_key("acme")[1] for _ in range(3)]
    await cluster_store.put_tenant(Tenant(id="acme"))
    for key in keys:
        await cluster_store.put_key(key)
    added = await asyncio.gather(
        *(cluster_store.add_policy_version("acme", {}, "env", 1.0) for _ in range(5))
    )
    assert sorted(p.version for p in added) == [1, 2, 3, 4, 5]
    assert await cluster_store.activate_policy("acme", 2) is True
    assert (await cluster_store.active_policy("acme")).version == 2
    await cluster_store.add_rails_config("strict", {"config.yml": ""}, "env", 1.0)
    assert [c.name for c in await cluster_store.rails_configs()] == ["strict"]
    entry = AuditEntry(at=1.0, actor="env", action="tenant.delete", target="acme")
    await cluster_store.append_audit(entry)
    assert await cluster_store.audit_log() == [entry]
    assert await cluster_store.bump_generation() == 1
    assert await cluster_store.delete_tenant("acme") is True
    assert [await cluster_store.get_key(k.key_sha256) for k in keys] == [None] * 3


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
