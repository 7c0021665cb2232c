"""Rate limits across replicas: real `railgate serve` processes sharing the real Redis.

Two gateways (A and B, separate ports, one Redis prefix) front one `LimitedUpstream`
served on loopback as an `openai` provider. Every test has its own tenant (limits are
per tenant), so the module starts the processes once. A third process, the victim V,
shares the prefix with `limiter.lease_ttl_s: 1`; it is SIGKILLed by the lease test.
A and B keep a 30 s lease time, so a lease that comes back within a second on them was
released by the gateway, not expired.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import pytest
import redis

from gateway.keys import hash_key
from gateway.limits.tokens import estimate_tokens
from gateway.schemas import parse_request
from tests.conftest import REDIS_URL, UPSTREAM_KEY, UPSTREAM_KEY_ENV
from tests.limited_upstream import LimitedUpstream
from tests.local_redis import redis_prefix
from tests.railgate_process import RailgateProcess, serve_env, serving, write_config
from tests.servers import ServerThread

MODEL = "limited-model"
DEFAULT_MAX_TOKENS = 1024
VICTIM_LEASE_TTL_S = 1.0

TENANT_LIMITS: dict[str, dict[str, Any]] = {
    "rl-rpm": {"rpm": 50},
    "rl-tpm": {"tpm": 1050},
    "rl-conc": {"concurrency": 5},
    "rl-reconcile": {"tpm": 1000},
    "rl-lease-kill": {"concurrency": 2},
    "rl-lease-drop": {"concurrency": 1},
    "rl-lease-fail": {"concurrency": 1},
}
KEYS = {tenant: f"rg-test-{tenant}-" + "k" * 40 for tenant in TENANT_LIMITS}


@dataclass
class Cluster:
    a: RailgateProcess
    b: RailgateProcess
    victim: RailgateProcess
    upstream: LimitedUpstream
    prefix: str


def _config(upstream_url: str, prefix: str, lease_ttl_s: float) -> dict[str, Any]:
    return {
        "store": f"{REDIS_URL}?prefix={prefix}",
        "limiter": {"lease_ttl_s": lease_ttl_s, "default_max_tokens": DEFAULT_MAX_TOKENS},
        "providers": [
            {
                "name": "lim",
                "type": "openai",
                "base_url": upstream_url + "/v1",
                "api_key_env": UPSTREAM_KEY_ENV,
                "timeout_s": 30.0,
            }
        ],
        "models": [{"name": MODEL, "provider": "lim"}],
        "tenants": [
            {"id": tenant, "keys": [{"key_sha256": hash_key(KEYS[tenant])}], "limits": limits}
            for tenant, limits in TENANT_LIMITS.items()
        ],
    }


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    tmp = tmp_path_factory.mktemp("replicas")
    upstream = LimitedUpstream()
    with redis_prefix() as prefix, ServerThread(upstream) as server:
        shared = write_config(tmp / "shared.yaml", _config(server.url, prefix, 30.0))
        victim_cfg = write_config(
            tmp / "victim.yaml", _config(server.url, prefix, VICTIM_LEASE_TTL_S)
        )
        runs = [(tmp / "a.log", shared), (tmp / "b.log", shared), (tmp / "victim.log", victim_cfg)]
        with serving(*runs, env=serve_env({UPSTREAM_KEY_ENV: UPSTREAM_KEY})) as (a, b, victim):
            yield Cluster(a, b, victim, upstream, prefix)


@pytest.fixture
def up(cluster: Cluster) -> LimitedUpstream:
    cluster.upstream.reset()
    return cluster.upstream


def _body(reserve: int, content: str = "hi") -> dict[str, Any]:
    """A chat body whose admission reserves exactly `reserve` tokens (the gateway's own
    estimate: prompt estimate + max_tokens)."""
    messages = [{"role": "user", "content": content}]
    prompt, _ = estimate_tokens(
        parse_request("chat/completions", orjson.dumps({"model": MODEL, "messages": messages})),
        DEFAULT_MAX_TOKENS,
    )
    assert reserve - prompt >= 1
    body: dict[str, Any] = {"model": MODEL, "messages": messages, "max_tokens": reserve - prompt}
    assert sum(estimate_tokens(parse_request("chat/completions", orjson.dumps(body)), 0)) == (
        reserve
    )
    return body


def _auth(tenant: str) -> dict[str, str]:
    return {"authorization": f"Bearer {KEYS[tenant]}"}


def _client() -> httpx.AsyncClient:
    return httpx.AsyncClient(
        timeout=30, limits=httpx.Limits(max_connections=200, max_keepalive_connections=200)
    )


async def _burst(
    replicas: list[RailgateProcess], tenant: str, body: dict[str, Any], total: int, clients: int
) -> list[httpx.Response]:
    """`total` concurrent requests from `clients` clients, split evenly over `replicas`."""
    pool = [_client() for _ in range(clients)]
    try:
        jobs = [
            pool[i % clients].post(
                replicas[(i % clients) % len(replicas)].chat, json=body, headers=_auth(tenant)
            )
            for i in range(total)
        ]
        return list(await asyncio.gather(*jobs))
    finally:
        for client in pool:
            await client.aclose()


async def _eventually(check: Callable[[], bool], within: float) -> float:
    """Wait until `check()` holds; return the seconds it took. Fails after `within` seconds."""
    start = time.monotonic()
    while not check():
        assert time.monotonic() - start < within, "condition not reached in time"
        await asyncio.sleep(0.01)
    return time.monotonic() - start


def _assert_rate_limited(resp: httpx.Response) -> None:
    assert resp.status_code == 429, resp.text
    assert resp.json()["error"]["code"] == "rate_limit_exceeded", resp.text
    assert int(resp.headers["retry-after"]) >= 1


def _split(responses: list[httpx.Response]) -> tuple[list[httpx.Response], list[httpx.Response]]:
    ok = [r for r in responses if r.status_code == 200]
    refused = [r for r in responses if r.status_code != 200]
    for r in refused:
        _assert_rate_limited(r)
    return ok, refused


async def _admitted_within(
    replica: RailgateProcess, tenant: str, body: dict[str, Any], within: float
) -> float:
    """Poll `replica` until a request is admitted (200); only 429s may come before it.
    Returns the seconds it took."""
    start = time.monotonic()
    async with _client() as client:
        while True:
            resp = await client.post(replica.chat, json=body, headers=_auth(tenant))
            if resp.status_code == 200:
                return time.monotonic() - start
            _assert_rate_limited(resp)
            assert time.monotonic() - start < within, "never admitted again"
            await asyncio.sleep(0.02)


# -- 1. requests per minute -----------------------------------------------------------


async def test_rpm_is_exact_across_two_replicas(cluster: Cluster, up: LimitedUpstream) -> None:
    responses = await _burst([cluster.a, cluster.b], "rl-rpm", _body(20), total=200, clients=4)
    ok, refused = _split(responses)
    assert (len(ok), len(refused)) == (50, 150)
    # Each admission saw a distinct count: the two replicas shared one atomic window.
    assert sorted(int(r.headers["x-ratelimit-remaining-requests"]) for r in ok) == list(range(50))
    assert {r.headers["x-ratelimit-limit-requests"] for r in ok} == {"50"}
    assert all(1 <= int(r.headers["retry-after"]) <= 60 for r in refused)
    await _eventually(lambda: up.served >= 50, 2)
    await asyncio.sleep(0.1)
    assert (up.served, up.in_flight) == (50, 0)


# -- 2. tokens per minute -------------------------------------------------------------


async def test_tpm_is_exact_across_two_replicas(cluster: Cluster, up: LimitedUpstream) -> None:
    body = _body(100)  # 10 fit in 1050 tokens, the 11th (1100) does not
    up.usage = (8, 92)  # the real usage equals the reservation: settlement changes nothing
    assert sum(up.usage) == 100
    responses = await _burst([cluster.a, cluster.b], "rl-tpm", body, total=60, clients=4)
    ok, refused = _split(responses)
    assert (len(ok), len(refused)) == (10, 50)
    assert sorted(int(r.headers["x-ratelimit-remaining-tokens"]) for r in ok) == [
        1050 - 100 * n for n in range(10, 0, -1)
    ]
    assert {r.headers["x-ratelimit-limit-tokens"] for r in refused} == {"1050"}
    assert {r.headers["x-ratelimit-remaining-tokens"] for r in refused} == {"50"}
    await _eventually(lambda: up.served >= 10, 2)
    await asyncio.sleep(0.1)
    assert up.served == 10


# -- 3. concurrency ---------------------------------------------------------------------


async def test_concurrency_is_never_exceeded(cluster: Cluster, up: LimitedUpstream) -> None:
    up.delay_s = 0.3
    responses = await _burst([cluster.a, cluster.b], "rl-conc", _body(20), total=40, clients=2)
    ok, refused = _split(responses)
    assert len(ok) + len(refused) == 40
    assert len(ok) >= 5 and len(refused) >= 1
    await _eventually(lambda: up.served >= len(ok), 2)
    assert up.max_in_flight == 5
    assert up.served == len(ok)


# -- 4. token reconciliation ------------------------------------------------------------


async def test_tpm_reconciles_to_real_usage(cluster: Cluster, up: LimitedUpstream) -> None:
    tenant = "rl-reconcile"
    up.usage = (60, 40)  # the provider reports 100 tokens for a 1000-token reservation
    window_sum = f"{cluster.prefix}:{{{tenant}}}:rl:t:tpm:n"
    store = redis.Redis.from_url(REDIS_URL)
    try:
        async with _client() as client:
            first = await client.post(cluster.a.chat, json=_body(1000), headers=_auth(tenant))
            assert first.status_code == 200, first.text
            assert first.headers["x-ratelimit-remaining-tokens"] == "0"
            # Settlement runs right after the answer: wait for it in the store.
            await _eventually(lambda: int(store.get(window_sum) or 0) == 100, 2)

            too_big = await client.post(cluster.b.chat, json=_body(901), headers=_auth(tenant))
            _assert_rate_limited(too_big)
            assert too_big.headers["x-ratelimit-remaining-tokens"] == "900"

            up.usage = (8, 892)  # this one uses what it reserved
            fits = await client.post(cluster.b.chat, json=_body(900), headers=_auth(tenant))
            assert fits.status_code == 200, fits.text
            assert fits.headers["x-ratelimit-remaining-tokens"] == "0"
            await asyncio.sleep(0.2)
            assert int(store.get(window_sum) or 0) == 1000
            _assert_rate_limited(
                await client.post(cluster.a.chat, json=_body(9), headers=_auth(tenant))
            )
    finally:
        store.close()
    assert up.served == 2


# -- 5. leases --------------------------------------------------------------------------


async def test_leases_of_a_killed_replica_expire(cluster: Cluster, up: LimitedUpstream) -> None:
    tenant, body = "rl-lease-kill", _body(20)
    up.hang = True
    victim = _client()
    hanging = [
        asyncio.ensure_future(victim.post(cluster.victim.chat, json=body, headers=_auth(tenant)))
        for _ in range(2)
    ]
    try:
        await _eventually(lambda: up.in_flight == 2, 5)
        async with _client() as client:
            _assert_rate_limited(
                await client.post(cluster.b.chat, json=body, headers=_auth(tenant))
            )
            # Longer than the victim's lease time: its live leases are renewed, not lost.
            await asyncio.sleep(VICTIM_LEASE_TTL_S * 1.5)
            _assert_rate_limited(
                await client.post(cluster.a.chat, json=body, headers=_auth(tenant))
            )

            cluster.victim.proc.send_signal(signal.SIGKILL)
            cluster.victim.proc.wait(timeout=5)
            killed = time.monotonic()
            up.hang = False
            # The dead replica cannot release its leases; right after its death they hold.
            _assert_rate_limited(
                await client.post(cluster.b.chat, json=body, headers=_auth(tenant))
            )
        took = await _admitted_within(cluster.b, tenant, body, within=3)
        since_kill = time.monotonic() - killed
    finally:
        if cluster.victim.proc.poll() is None:  # failed before the kill: do not hang here
            for job in hanging:
                job.cancel()
        outcomes = await asyncio.gather(*hanging, return_exceptions=True)
        await victim.aclose()
    assert all(isinstance(o, httpx.TransportError) for o in outcomes), outcomes
    # Renewed every third of the lease time, so a lease outlives its holder by 2/3..1 of it.
    assert 0.5 <= since_kill <= VICTIM_LEASE_TTL_S + 0.5, (took, since_kill)
    await _eventually(lambda: up.disconnects == 2, 2)


async def test_lease_comes_back_when_the_client_disconnects(
    cluster: Cluster, up: LimitedUpstream
) -> None:
    tenant, body = "rl-lease-drop", _body(20)
    up.hang = True
    leaving = _client()
    task = asyncio.ensure_future(leaving.post(cluster.a.chat, json=body, headers=_auth(tenant)))
    try:
        await _eventually(lambda: up.in_flight == 1, 5)
        async with _client() as client:
            _assert_rate_limited(
                await client.post(cluster.b.chat, json=body, headers=_auth(tenant))
            )
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await leaving.aclose()
    # The gateway cancels the upstream call and releases the lease (A's leases live 30 s).
    await _eventually(lambda: up.disconnects == 1, 2)
    up.hang = False
    assert await _admitted_within(cluster.b, tenant, body, within=1) < 1
    assert up.served == 1


async def test_lease_comes_back_after_an_upstream_error(
    cluster: Cluster, up: LimitedUpstream
) -> None:
    tenant, body = "rl-lease-fail", _body(20)
    up.fail_status = 500
    async with _client() as client:
        failed = await client.post(cluster.a.chat, json=body, headers=_auth(tenant))
        assert failed.status_code == 502, failed.text
        assert failed.json()["error"]["code"] == "upstream_error"
    up.fail_status = None
    assert await _admitted_within(cluster.b, tenant, body, within=1) < 1
    assert up.served == 1
