"""`RedisStore` on a real Redis Cluster (`?cluster=true`): one node owning every slot.

A single-node cluster still enforces the cluster rules the gateway depends on: a
script's keys must share one slot (CROSSSLOT otherwise), the client routes by slot,
and scripts are loaded on the node that runs them.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
import redis
from redis.asyncio.cluster import RedisCluster

from gateway.keys import hash_key, new_key
from gateway.limits.rules import Rule
from gateway.store import RedisStore, Tenant
from tests.local_redis import pings
from tests.servers import free_port, stop_process, wait_until

REDIS_SERVER = shutil.which("redis-server")


def _free_port_pair() -> tuple[int, int]:
    """A client port and a cluster bus port, both free and distinct."""
    while True:
        port, bus = free_port(), free_port()
        if port != bus:
            return port, bus


@pytest.fixture(scope="module")
def cluster_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    if REDIS_SERVER is None:
        pytest.skip("redis-server is not on PATH")
    workdir: Path = tmp_path_factory.mktemp("redis-cluster")
    port, bus = _free_port_pair()
    server = subprocess.Popen(
        [
            REDIS_SERVER,
            "--port", str(port),
            "--bind", "127.0.0.1",
            "--cluster-enabled", "yes",
            "--cluster-port", str(bus),
            "--cluster-config-file", str(workdir / "nodes.conf"),
            "--dir", str(workdir),
            "--save", "",
            "--appendonly", "no",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=2)
        try:
            _wait(lambda: pings(client), "redis-server did not start")
            client.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 16383)
            _wait(lambda: _cluster_ok(client), "the cluster did not reach cluster_state:ok")
        finally:
            client.close()
        yield port
    finally:
        stop_process(server, timeout=5)


def _cluster_ok(client: redis.Redis) -> bool:
    return b"cluster_state:ok" in client.execute_command("CLUSTER", "INFO")


def _wait(ready: Callable[[], bool], message: str, timeout: float = 10.0) -> None:
    if not wait_until(ready, time.monotonic() + timeout, every=0.02):
        pytest.fail(message)


@pytest.fixture
async def cluster_store(cluster_port: int) -> AsyncIterator[RedisStore]:
    prefix = f"rgtest-{uuid.uuid4().hex[:12]}"
    store = RedisStore.from_url(f"redis://127.0.0.1:{cluster_port}/0?cluster=true&prefix={prefix}")
    yield store
    await store.close()


async def test_the_store_is_a_cluster_client(cluster_store):
    assert isinstance(cluster_store._r, RedisCluster)
    assert await cluster_store.ping() is True


async def test_tenants_and_keys_roundtrip(cluster_store):
    tenant = Tenant(id="acme", name="Acme", models=("mock-1",), created_at=1.0)
    await cluster_store.put_tenant(tenant)
    assert await cluster_store.get_tenant("acme") == tenant
    assert [t.id for t in await cluster_store.list_tenants()] == ["acme"]
    secret, key = new_key("acme", name="ci")
    await cluster_store.put_key(key)
    assert await cluster_store.get_key(hash_key(secret)) == key
    assert [k.id for k in await cluster_store.list_keys("acme")] == [key.id]
    assert await cluster_store.revoke_key("acme", key.id, at=5.0) is True
    revoked = await cluster_store.get_key(key.key_sha256)
    assert revoked is not None and revoked.revoked_at == 5.0


async def test_admit_settle_and_renew_across_rule_kinds(cluster_store):
    limits = cluster_store.limits
    spent = Rule("{acme}:rl:t:usd:d:20240101", "budget", 1_000, 60_000, 0, "usd", "budget")
    tokens = Rule("{acme}:rl:t:tpm", "window", 1_000, 60_000, 800, "tokens", "tpm")
    requests = Rule("{acme}:rl:k:key_1:rpm", "window", 10, 60_000, 1, "requests", "rpm")
    held = Rule("{acme}:rl:m:gpt:conc", "lease", 1, 60_000, 1, "concurrency", "conc")
    rules = [spent, tokens, requests, held]
    first = await limits.admit("t1", rules)
    assert first.refused is None
    assert first.used == (0, 800, 1, 1)
    assert first.reset_ms == (60_000, 60_000, 60_000, 0)
    assert (await limits.admit("t2", rules)).refused == tokens
    await limits.renew(held.key, ["t1"], 60_000)
    await limits.settle("t1", [(tokens, 100), (held, 0), (spent, 400)])
    second = await limits.admit("t2", rules)
    assert second.refused is None
    assert second.used == (400, 900, 2, 1)  # t2 refused before reserved nothing


async def test_concurrent_admissions_are_atomic(cluster_store):

    rule = Rule("{bravo}:rl:t:rpm", "window", 7, 60_000, 1, "requests", "rpm")
    verdicts = await asyncio.gather(
        *(cluster_store.limits.admit(f"c{i}", [rule]) for i in range(30))
    )
    assert sum(v.refused is None for v in verdicts) == 7


async def test_pace_and_tighten_on_a_provider_slot(cluster_store):
    limits = cluster_store.limits
    rule = Rule("{provider:up}:pace:rpm", "window", 2, 60_000, 1, "requests", "provider rpm")
    block = "{provider:up}:pace:block"
    assert (await limits.pace("a:acme", [rule], block, 0)).wait_ms == 0
    await limits.tighten([(rule, 0)], block, 0)  # the provider says it is full
    refused = await limits.pace("b:acme", [rule], block, 0)
    assert refused.refused == "wait"
    assert 59_000 < refused.wait_ms <= 60_000
    await limits.tighten([], block, 200)
    assert 0 < (await limits.pace("c:acme", [], block, 1_000)).wait_ms <= 200


async def test_a_tenant_limit_keys_share_one_slot(cluster_store, cluster_port):
    limits = cluster_store.limits
    rules = [
        Rule("{carol}:rl:t:tpm", "window", 100, 60_000, 1, "tokens", "tpm"),
        Rule("{carol}:rl:k:key_9:conc", "lease", 5, 60_000, 1, "concurrency", "conc"),
    ]
    assert (await limits.admit("t1", rules)).refused is None
    await limits.settle("t1", [(rules[1], 0)])
    client = redis.Redis(host="127.0.0.1", port=cluster_port)
    try:
        names = [k.decode() for k in client.scan_iter(match=f"{cluster_store.prefix}:{{carol}}:*")]
        assert names  # the window and its sum
        slots = {client.execute_command("CLUSTER", "KEYSLOT", n) for n in names}
        assert slots == {client.execute_command("CLUSTER", "KEYSLOT", "{carol}")}
    finally:
        client.close()


async def test_unreachable_cluster_ping_is_false():
    store = RedisStore.from_url(f"redis://127.0.0.1:{free_port()}/0?cluster=true")
    try:
        assert await store.ping() is False
    finally:
        await store.close()


async def test_unreachable_cluster_fails_limits_with_a_redis_error():
    store = RedisStore.from_url(f"redis://127.0.0.1:{free_port()}/0?cluster=true")
    rule = Rule("{acme}:rl:t:rpm", "window", 1, 1_000, 1, "requests", "rpm")
    try:
        with pytest.raises(redis.RedisError):
            await store.limits.admit("t1", [rule])
    finally:
        await store.close()
