"""The usage ledger through a real gateway: no injected sink, so `LedgerSink` writes to
the store. A mixed workload's totals equal its records; a test-owned `redis-server`
killed mid-load and restarted loses no record and duplicates none; a full buffer drops
new records and counts them; shutdown writes what is still buffered."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.app import asgi_app, create_app
from gateway.config import parse_settings
from gateway.keys import hash_key
from gateway.ledger.records import UsageRecord, day_of
from gateway.store import RedisStore
from tests.clients import streamed_chat
from tests.conftest import REDIS_URL, UPSTREAM_KEY, UPSTREAM_KEY_ENV, gateway_config
from tests.fakes import FakeUpstream
from tests.integration.test_ledger_contract import expected
from tests.local_redis import OwnRedis, own_redis_server, redis_prefix
from tests.servers import ServerThread

KEY = "rg-ledger-" + "c" * 40
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
POLICY = {"input": [{"denylist": {"terms": ["forbidden"]}}]}
ENV = {UPSTREAM_KEY_ENV: UPSTREAM_KEY}


def config(upstream: FakeUpstream, store: str, tenant: str, **ledger: Any) -> dict[str, Any]:
    tenants = [
        {"id": tenant, "keys": [{"name": "k", "key_sha256": hash_key(KEY)}], "policy": POLICY}
    ]
    raw = gateway_config(upstream.url, store=store, tenants=tenants)  # type: ignore[attr-defined]
    raw["providers"][1]["timeout_s"] = 30.0  # `hang` waits for the client to leave
    raw["ledger"] = {"flush_interval_ms": 20, "retry_max_ms": 100, **ledger}
    return raw


@contextmanager
def serving(raw: dict[str, Any]) -> Iterator[str]:
    """A gateway built without a `sink=`: the real `LedgerSink` runs."""
    app = create_app(parse_settings(raw, ENV))
    with ServerThread(asgi_app(app)) as server:
        yield server.url


async def chat(
    http: httpx.AsyncClient, url: str, model: str = "gpt-test", **fields: Any
) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": fields.pop("text", "hi")}]}
    headers = {"authorization": f"Bearer {KEY}", **fields.pop("headers", {})}
    return await http.post(url + "/v1/chat/completions", json={**body, **fields}, headers=headers)


async def metric(http: httpx.AsyncClient, url: str, name: str) -> int:
    text = (await http.get(url + "/metrics")).text
    (line,) = [ln for ln in text.splitlines() if ln.startswith(name + " ")]
    return int(line.split()[1])


async def ledger_of(
    store: RedisStore, tenant: str, count: int, within: float = 10.0
) -> list[UsageRecord]:
    """The tenant's records once `count` are there (and no more arrive for a moment)."""
    deadline = time.monotonic() + within
    while True:
        now = time.time()
        found = await store.ledger.usage_records(tenant, now - 600, now + 1, limit=10_000)
        if len(found) >= count:
            await asyncio.sleep(0.3)
            return await store.ledger.usage_records(
                tenant, now - 600, time.time() + 1, limit=10_000
            )
        assert time.monotonic() < deadline, f"{len(found)} of {count} records in the ledger"
        await asyncio.sleep(0.05)


async def assert_totals_match(store: RedisStore, tenant: str, records: list[UsageRecord]) -> None:
    now = time.time()
    first, last = day_of(now - 600), day_of(now + 1)
    for group_by in ("day", "model", "key", "user"):
        assert await store.ledger.usage_totals(tenant, first, last, group_by) == expected(
            records, group_by
        )


@pytest.fixture
async def shared_redis() -> AsyncIterator[tuple[str, RedisStore]]:
    with redis_prefix("rgtest-ledger") as prefix:
        url = f"{REDIS_URL}?prefix={prefix}"
        store = RedisStore.from_url(url)
        try:
            yield url, store
        finally:
            await store.close()


async def test_mixed_workload_totals_equal_the_records(
    upstream: FakeUpstream, shared_redis
) -> None:
    url, store = shared_redis
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    sent: dict[str, int] = {}
    with serving(config(upstream, url, tenant)) as gw:
        async with httpx.AsyncClient(timeout=10) as http:
            calls = [
                {},
                {"user": "alice"},
                {
                    "headers": {
                        "x-railgate-user": "bob",
                        "traceparent": f"00-{TRACE}-00f067aa0ba902b7-01",
                    }
                },
                {"stream": True, "stream_options": {"include_usage": True}, "user": "alice"},
                {"stream": True},
                {"model": "no-usage"},
                {"model": "status-500"},
                {"model": "status-429", "user": "bob"},
                {"text": "this is forbidden"},
                {"text": "forbidden", "stream": True},
            ]
            for fields in calls:
                resp = await chat(http, gw, **fields)
                sent[resp.headers["x-request-id"]] = resp.status_code
            gone = f"gone-{uuid.uuid4().hex}"
            hang = {"model": "hang", "stream": True, "messages": [{"role": "user", "content": "x"}]}
            async with streamed_chat(gw + "/v1", KEY, hang, request_id=gone) as resp:
                assert (await anext(resp.aiter_bytes())).startswith(b"data: ")
            sent[gone] = 499
            records = await ledger_of(store, tenant, len(sent))
            assert await metric(http, gw, "railgate_usage_dropped_total") == 0
    assert sorted(r.request_id for r in records) == sorted(sent)  # each exactly once
    by_id = {r.request_id: r for r in records}
    assert {rid: by_id[rid].status for rid in sent} == sent
    assert sorted(sent.values()) == [200] * 6 + [400] * 2 + [429, 499, 502]
    ok = [r for r in records if r.status == 200 and r.model == "gpt-test"]
    assert [(r.prompt_tokens, r.completion_tokens, r.cost_micro_usd) for r in ok] == [
        (11, 4, 68)
    ] * 5
    assert all(r.upstream_model == "upstream-gpt" and r.upstream_ms is not None for r in ok)
    assert all(0 <= r.overhead_ms <= r.latency_ms for r in records)
    (traced,) = [r for r in records if r.user == "bob" and r.status == 200]
    assert traced.trace_id == TRACE
    (estimated,) = [r for r in records if r.model == "no-usage"]
    assert estimated.estimated and (estimated.prompt_tokens, estimated.completion_tokens) == (8, 0)
    blocked = [r for r in records if r.blocked]
    assert [(r.status, r.error, r.guard_actions, r.prompt_tokens) for r in blocked] == [
        (400, "content_filter", {"denylist.blocked": 1}, 0)
    ] * 2
    disconnected = by_id[gone]
    assert disconnected.error == "client_disconnected" and disconnected.estimated
    assert disconnected.prompt_tokens == 3 + 4 + 1
    await assert_totals_match(store, tenant, records)
    (total,) = await store.ledger.usage_totals(
        tenant, day_of(time.time() - 600), day_of(time.time()), "key"
    )
    assert (total.requests, total.errors, total.blocked, total.limited, total.disconnected) == (
        11, 5, 2, 1, 1,
    )  # fmt: skip


async def test_calls_refused_at_admission_are_recorded_as_limited(
    upstream: FakeUpstream, shared_redis
) -> None:
    url, store = shared_redis
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    raw = config(upstream, url, tenant)
    raw["tenants"][0]["limits"] = {"rpm": 1}
    with serving(raw) as gw:
        async with httpx.AsyncClient(timeout=10) as http:
            first, refused = await chat(http, gw), await chat(http, gw, user="carol")
            assert (first.status_code, refused.status_code) == (200, 429)
            records = await ledger_of(store, tenant, 2)
    by_id = {r.request_id: r for r in records}
    limited = by_id[refused.headers["x-request-id"]]
    assert (limited.status, limited.error, limited.user) == (429, "rate_limit_exceeded", "carol")
    assert (limited.prompt_tokens, limited.completion_tokens, limited.cost_micro_usd) == (0, 0, 0)
    assert not limited.estimated  # never sent upstream: nothing to estimate
    await assert_totals_match(store, tenant, records)
    (total,) = await store.ledger.usage_totals(
        tenant, day_of(time.time() - 600), day_of(time.time()), "key"
    )
    assert (total.requests, total.errors, total.limited) == (2, 1, 1)


async def test_shutdown_writes_the_buffer(upstream: FakeUpstream, shared_redis) -> None:
    url, store = shared_redis
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    with serving(config(upstream, url, tenant, flush_interval_ms=60_000)) as gw:
        async with httpx.AsyncClient(timeout=10) as http:
            ids = [(await chat(http, gw)).headers["x-request-id"] for _ in range(5)]
            await asyncio.sleep(0.2)
            now = time.time()
            assert (
                await store.ledger.usage_records(tenant, now - 60, now + 1) == []
            )  # still buffered
    records = await ledger_of(store, tenant, 5, within=1.0)  # written while shutting down
    assert sorted(r.request_id for r in records) == sorted(ids)


# ============================================================= a Redis of our own


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    with own_redis_server(durable=tmp_path) as server:
        yield server


async def test_redis_killed_mid_load_loses_and_duplicates_nothing(
    upstream: FakeUpstream, own_redis: OwnRedis
) -> None:
    tenant = "durable"
    ids: list[str] = []
    store = RedisStore.from_url(own_redis.url)
    try:
        with serving(config(upstream, own_redis.url, tenant)) as gw:
            async with httpx.AsyncClient(timeout=10) as http:

                async def load(n: int) -> None:
                    async def one(i: int) -> None:
                        resp = await chat(http, gw, stream=bool(i % 2), user=f"u{i % 3}")
                        assert resp.status_code == 200, resp.text
                        ids.append(resp.headers["x-request-id"])

                    for start in range(0, n, 4):  # four in flight at a time
                        await asyncio.gather(*(one(start + i) for i in range(4)))
                        await asyncio.sleep(0.01)

                await load(24)
                own_redis.kill()  # mid-load: some records written, some in flight
                await load(24)  # answered as usual while the ledger cannot be written
                await asyncio.sleep(0.3)
                assert await metric(http, gw, "railgate_usage_write_errors_total") >= 1
                own_redis.start()  # same data directory: what was acknowledged is back
                await load(24)
                records = await ledger_of(store, tenant, 72)
                assert await metric(http, gw, "railgate_usage_dropped_total") == 0
                assert await metric(http, gw, "railgate_usage_written_total") == 72
    finally:
        await store.close()
    assert len(ids) == 72
    assert sorted(r.request_id for r in records) == sorted(ids)
    reader = RedisStore.from_url(own_redis.url)
    try:
        await assert_totals_match(reader, tenant, records)
    finally:
        await reader.close()


async def test_a_full_buffer_drops_new_records_and_counts_them(
    upstream: FakeUpstream, own_redis: OwnRedis
) -> None:
    tenant = "overflow"
    store = RedisStore.from_url(own_redis.url)
    try:
        with serving(config(upstream, own_redis.url, tenant, buffer_records=3)) as gw:
            async with httpx.AsyncClient(timeout=10) as http:
                own_redis.kill()
                ids = [(await chat(http, gw)).headers["x-request-id"] for _ in range(5)]
                await asyncio.sleep(0.2)
                assert await metric(http, gw, "railgate_usage_dropped_total") == 2
                own_redis.start()
                records = await ledger_of(store, tenant, 3)
                assert await metric(http, gw, "railgate_usage_written_total") == 3
    finally:
        await store.close()
    assert [r.request_id for r in records] == ids[:3]
