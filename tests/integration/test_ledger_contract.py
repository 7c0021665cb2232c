"""The usage ledger's contract, on `memory://` and on the real local Redis.

Each record is kept once, however often it is written; the day totals always equal
the sums of the records they were built from, grouped by day, model, key or end user.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import time
import uuid
from collections import defaultdict
from typing import Any

import pytest
import redis
import redis.asyncio

from gateway.ledger.memory import MemoryLedger
from gateway.ledger.records import METRICS, Retention, UsageRecord, UsageTotals, day_of
from gateway.store import MemoryStore, Store
from tests.conftest import REDIS_URL
from tests.integration.test_redis_cluster import cluster_port, cluster_store  # noqa: F401

DAY = 86400
NOW = time.time()
TODAY = day_of(NOW)
YESTERDAY = TODAY - dt.timedelta(days=1)


@pytest.fixture(params=["memory", "redis"])
async def store(request, redis_store) -> Store:
    if request.param == "memory":
        return MemoryStore()
    return redis_store


def make(tenant: str = "acme", **fields: Any) -> UsageRecord:
    base: dict[str, Any] = {
        "request_id": f"req-{uuid.uuid4().hex[:12]}",
        "tenant_id": tenant,
        "key_id": "key_a",
        "model": "gpt-test",
        "provider": "up",
        "endpoint": "chat/completions",
        "stream": False,
        "status": 200,
        "error": None,
        "user": None,
        "prompt_tokens": 11,
        "completion_tokens": 4,
        "cost_micro_usd": 67,
        "latency_ms": 12.5,
        "ttft_ms": 10.25,
        "timestamp": NOW,
        "trace_id": uuid.uuid4().hex,
        "requested_model": "gpt-test",
        "upstream_model": "upstream-gpt",
        "upstream_ms": 9.5,
        "overhead_ms": 3.0,
    }
    base.update(fields)
    return UsageRecord(**base)


def workload(tenant: str = "acme") -> list[UsageRecord]:
    """Every kind of outcome, two models, two keys, two users and none, two days."""
    return [
        make(tenant),
        make(tenant, stream=True, user="alice", cached_tokens=5, reasoning_tokens=2),
        make(tenant, key_id="key_b", user="bob", prompt_tokens=100, completion_tokens=50,
             cost_micro_usd=750, rails_calls=2, rails_cost_micro_usd=30),
        make(tenant, status=502, error="upstream_status", prompt_tokens=0, completion_tokens=0,
             cost_micro_usd=0, upstream_ms=1.0),
        make(tenant, status=400, error="content_filter", blocked=True, prompt_tokens=0,
             completion_tokens=0, cost_micro_usd=0, upstream_ms=None,
             guard_actions={"denylist.blocked": 1}),
        make(tenant, stream=True, blocked=True, error="content_filter", user="alice",
             guard_actions={"denylist.blocked": 1, "pii.redacted": 2}),
        make(tenant, status=429, error="upstream_status", model="claude-test", prompt_tokens=0,
             completion_tokens=0, cost_micro_usd=0),
        make(tenant, status=499, error="client_disconnected", stream=True, estimated=True,
             prompt_tokens=8, completion_tokens=0, cost_micro_usd=20, user="bob"),
        make(tenant, model="claude-test", key_id="key_b", timestamp=NOW - DAY,
             prompt_tokens=7, completion_tokens=3, cost_micro_usd=66),
        make(tenant, timestamp=NOW - DAY, user="alice", status=499, error="client_disconnected"),
    ]  # fmt: skip


def expected(records: list[UsageRecord], group_by: str) -> list[UsageTotals]:
    """The totals computed straight from the records, independently of the ledger."""
    sums: dict[str | None, dict[str, int]] = defaultdict(lambda: dict.fromkeys(METRICS, 0))
    for r in records:
        group = {
            "day": day_of(r.timestamp).isoformat(),
            "model": r.model,
            "key": r.key_id,
            "user": r.user,
        }[group_by]
        row = sums[group]
        row["requests"] += 1
        row["prompt_tokens"] += r.prompt_tokens
        row["completion_tokens"] += r.completion_tokens
        row["cached_tokens"] += r.cached_tokens
        row["reasoning_tokens"] += r.reasoning_tokens
        row["cost_micro_usd"] += r.cost_micro_usd + r.rails_cost_micro_usd
        row["errors"] += r.status >= 400
        row["blocked"] += r.blocked
        row["limited"] += r.status == 429
        row["disconnected"] += r.status == 499
    ordered = sorted(sums, key=lambda g: (g is not None, g or ""))
    return [UsageTotals(group=g, **sums[g]) for g in ordered]


async def test_each_record_is_kept_once(store):
    a, b, c = make(), make(user="alice"), make(stream=True)
    assert await store.ledger.append_usage([a, b]) == 2
    assert await store.ledger.append_usage([a, b, c]) == 1  # a retried batch, one new record
    assert await store.ledger.append_usage([c, c]) == 0
    assert await store.ledger.usage_records("acme", NOW - 1, NOW + 1) == [a, b, c]
    (total,) = await store.ledger.usage_totals("acme", TODAY, TODAY, "day")
    assert total == UsageTotals(
        group=TODAY.isoformat(), requests=3, prompt_tokens=33, completion_tokens=12,
        cost_micro_usd=201,
    )  # fmt: skip


async def test_two_calls_reusing_a_request_id_are_both_kept(store):
    first = make(request_id="client-chosen")
    again = make(request_id="client-chosen", timestamp=NOW + 0.5)
    assert await store.ledger.append_usage([first]) == 1
    assert await store.ledger.append_usage([again, first]) == 1
    assert await store.ledger.usage_records("acme", NOW - 1, NOW + 1) == [first, again]


async def test_records_round_trip_every_field(store):
    full = make(
        stream=True, user="u-1", cached_tokens=3, reasoning_tokens=4, estimated=True,
        rails_calls=1, rails_prompt_tokens=5, rails_completion_tokens=6, rails_cost_micro_usd=7,
        blocked=True, guard_actions={"pii.redacted": 2}, ttft_ms=None, upstream_ms=None,
    )  # fmt: skip
    await store.ledger.append_usage([full])
    assert await store.ledger.usage_records("acme", NOW - 1, NOW + 1) == [full]


@pytest.mark.parametrize("group_by", ["day", "model", "key", "user"])
async def test_totals_equal_the_sum_of_the_records(store, group_by):
    records = workload()
    for i in range(0, len(records), 3):  # several batches, some written twice
        await store.ledger.append_usage(records[i : i + 3])
        await store.ledger.append_usage(records[: i + 3])
    await store.ledger.append_usage(workload("other"))  # another tenant changes nothing here
    assert await store.ledger.usage_totals("acme", YESTERDAY, TODAY, group_by) == expected(
        records, group_by
    )


async def test_totals_of_a_mixed_workload_exactly(store):
    await store.ledger.append_usage(workload())
    by_model = await store.ledger.usage_totals("acme", YESTERDAY, TODAY, "model")
    assert by_model == [
        UsageTotals(group="claude-test", requests=2, prompt_tokens=7, completion_tokens=3,
                    cost_micro_usd=66, errors=1, limited=1),
        UsageTotals(group="gpt-test", requests=8, prompt_tokens=152, completion_tokens=66,
                    cached_tokens=5, reasoning_tokens=2, cost_micro_usd=1068, errors=4,
                    blocked=2, disconnected=2),
    ]  # fmt: skip


async def test_totals_cover_only_the_days_asked(store):
    records = workload()
    await store.ledger.append_usage(records)
    today = [r for r in records if day_of(r.timestamp) == TODAY]
    assert await store.ledger.usage_totals("acme", TODAY, TODAY, "key") == expected(today, "key")
    far = TODAY + dt.timedelta(days=5)
    assert await store.ledger.usage_totals("acme", far, far, "day") == []
    assert await store.ledger.usage_totals("nobody", YESTERDAY, TODAY, "day") == []


async def test_records_by_time_range_in_write_order_with_limit(store):
    old, mid, new = make(timestamp=NOW - 20), make(timestamp=NOW - 10), make(timestamp=NOW)
    await store.ledger.append_usage([old, mid])
    await store.ledger.append_usage([new, make("other", timestamp=NOW)])
    assert await store.ledger.usage_records("acme", NOW - 30, NOW + 1) == [old, mid, new]
    assert await store.ledger.usage_records("acme", NOW - 15, NOW) == [mid]
    assert await store.ledger.usage_records("acme", NOW - 30, NOW + 1, limit=2) == [old, mid]
    assert await store.ledger.usage_records("acme", NOW + 1, NOW + 2) == []


async def test_records_leave_the_log_after_their_retention_totals_stay(store):
    short = Retention(records_s=1, totals_s=30 * DAY)
    first = make()
    await store.ledger.append_usage([first], short)
    await asyncio.sleep(1.1)
    second = make(timestamp=time.time())
    await store.ledger.append_usage([second], short)
    assert await store.ledger.usage_records("acme", NOW - 1, time.time() + 1) == [second]
    (total,) = await store.ledger.usage_totals("acme", TODAY, day_of(time.time()), "model")
    assert total.requests == 2


async def test_totals_past_their_retention_are_gone(store):
    long_ago = NOW - 10 * DAY
    await store.ledger.append_usage(
        [make(timestamp=long_ago)], Retention(records_s=DAY, totals_s=DAY)
    )
    day = day_of(long_ago)
    assert await store.ledger.usage_totals("acme", day, day, "day") == []


async def test_many_records_in_one_batch(store):
    records = [make(user=f"u{i % 7}", timestamp=NOW - i / 1000) for i in range(1200)]
    assert await store.ledger.append_usage(records) == 1200
    assert await store.ledger.append_usage(records) == 0
    assert await store.ledger.usage_totals("acme", YESTERDAY, TODAY, "user") == expected(
        records, "user"
    )
    found = await store.ledger.usage_records("acme", NOW - 5, NOW + 1, limit=5000)
    assert found == records


async def test_redis_layout_one_slot_per_tenant_with_expiry(redis_store):
    await redis_store.ledger.append_usage(workload())
    client = redis.Redis.from_url(REDIS_URL)
    try:
        names = sorted(k.decode() for k in client.scan_iter(match=f"{redis_store.prefix}:*"))
        p = redis_store.prefix
        assert names == sorted(
            f"{p}:{{acme}}:usage:{name}"
            for name in (
                "log",
                f"ids:{YESTERDAY}",
                f"ids:{TODAY}",
                f"day:{YESTERDAY}",
                f"day:{TODAY}",
            )
        )
        end_of_today = (
            int(dt.datetime(TODAY.year, TODAY.month, TODAY.day, tzinfo=dt.UTC).timestamp()) + DAY
        )
        assert client.expiretime(f"{p}:{{acme}}:usage:ids:{TODAY}") == end_of_today + 30 * DAY
        assert client.expiretime(f"{p}:{{acme}}:usage:day:{TODAY}") == end_of_today + 400 * DAY
        assert client.xlen(f"{p}:{{acme}}:usage:log") == 10
    finally:
        client.close()


def dsar_workload(tenant: str = "acme") -> list[UsageRecord]:
    """alice, bob and no user, on two days, two models and two keys."""
    return [
        make(tenant, user="alice", cached_tokens=3),
        make(tenant, user="alice", model="claude-test", key_id="key_b", status=429),
        make(tenant, user="alice", timestamp=NOW - DAY, blocked=True, status=400),
        make(tenant, user="alice", model="claude-test", timestamp=NOW - DAY),
        make(tenant, user="bob", prompt_tokens=90),
        make(tenant, user="bob", model="claude-test", timestamp=NOW - DAY),
        make(tenant, cost_micro_usd=5),
        make(tenant, key_id="key_b", timestamp=NOW - DAY),
    ]


async def test_user_records_are_exactly_the_users(store):
    records = dsar_workload()
    await store.ledger.append_usage([*records, *dsar_workload("other")])
    alice = [r for r in records if r.user == "alice"]
    assert await store.ledger.user_records("acme", "alice") == alice
    assert await store.ledger.user_records("acme", "carol") == []
    assert await store.ledger.user_records("nobody", "alice") == []


async def test_erase_user_keeps_every_total_but_the_users(store):
    records = dsar_workload()
    other = dsar_workload("other")
    await store.ledger.append_usage([*records, *other])
    before = {
        g: await store.ledger.usage_totals("acme", YESTERDAY, TODAY, g)
        for g in ("day", "model", "key")
    }
    assert await store.ledger.erase_user("acme", "alice") == 4
    assert await store.ledger.user_records("acme", "alice") == []
    assert await store.ledger.user_records("other", "alice") == [
        r for r in other if r.user == "alice"
    ]  # another tenant's user of the same name is not this one
    for group_by, totals in before.items():
        assert await store.ledger.usage_totals("acme", YESTERDAY, TODAY, group_by) == totals
    anonymous = [dataclasses.replace(r, user=None) if r.user == "alice" else r for r in records]
    assert await store.ledger.usage_totals("acme", YESTERDAY, TODAY, "user") == expected(
        anonymous, "user"
    )
    assert await store.ledger.usage_records("acme", NOW - 2 * DAY, NOW + 1) == [
        r for r in records if r.user != "alice"
    ]
    assert await store.ledger.erase_user("acme", "alice") == 0
    assert await store.ledger.append_usage(records) == 0  # a retried write brings none back
    assert await store.ledger.user_records("acme", "alice") == []


async def test_erase_user_without_records_moves_the_totals_too(store):
    """Totals outlive the raw records: erasure reaches days whose records are gone."""
    short = Retention(records_s=1, totals_s=400 * DAY)
    old = make(user="alice", timestamp=NOW - 40 * DAY)
    await store.ledger.append_usage([old], short)
    await asyncio.sleep(1.1)
    await store.ledger.append_usage([make(timestamp=time.time())], short)  # trims the log
    assert await store.ledger.user_records("acme", "alice") == []
    assert await store.ledger.erase_user("acme", "alice") == 0
    day = day_of(old.timestamp)
    (row,) = await store.ledger.usage_totals("acme", day, day, "user")
    assert row.group is None and row.requests == 1


async def test_redis_erase_leaves_the_user_nowhere(redis_store):
    records = dsar_workload()
    await redis_store.ledger.append_usage(records)
    assert "alice" in await redis_values(redis_store.prefix)
    before = await redis_store.ledger.usage_records("acme", 0, 2e10, limit=10_000)
    await redis_store.ledger.erase_user("acme", "alice")
    values = await redis_values(redis_store.prefix)
    assert "bob" in values and "alice" not in values
    # Not in the stream's nodes either (memory, snapshots): XDEL alone only marks entries
    # deleted, so the log is rewritten: no deleted entry remains in it.
    assert await deleted_entries_kept(redis_store.prefix) == 0
    after = await redis_store.ledger.usage_records("acme", 0, 2e10, limit=10_000)
    assert after == [r for r in before if r.user != "alice"]  # the rest kept, in order
    assert await redis_store.ledger.append_usage([make("acme", user="carol")]) == 1
    assert (
        len(await redis_store.ledger.usage_records("acme", 0, 2e10, limit=10_000)) == len(after) + 1
    )


async def deleted_entries_kept(prefix: str) -> int:
    """Entries marked deleted that the streams under `prefix` still hold in their nodes."""
    client = redis.asyncio.Redis.from_url(REDIS_URL, decode_responses=True)
    kept = 0
    try:
        async for name in client.scan_iter(match=f"{prefix}:*"):
            if await client.type(name) == "stream":
                info = await client.xinfo_stream(name)
                kept += info["entries-added"] - info["length"]
    finally:
        await client.aclose()
    return kept


async def redis_values(prefix: str) -> str:
    """Every key under `prefix` with its type and whole value, as one string."""
    client = redis.asyncio.Redis.from_url(REDIS_URL, decode_responses=True)
    found: list[str] = []
    try:
        async for name in client.scan_iter(match=f"{prefix}:*"):
            kind = await client.type(name)
            read = {
                "string": client.get,
                "hash": client.hgetall,
                "set": client.smembers,
                "list": lambda n: client.lrange(n, 0, -1),
                "zset": lambda n: client.zrange(n, 0, -1, withscores=True),
                "stream": lambda n: client.xrange(n),
            }[kind]
            found.append(f"{name} {kind} {await read(name)}")
    finally:
        await client.aclose()
    return "\n".join(found)


def test_records_are_plain_ids_and_counts():
    fields = {f.name for f in dataclasses.fields(UsageRecord)}
    assert not fields & {"prompt", "messages", "answer", "content", "key", "api_key"}


async def test_the_ledger_works_on_redis_cluster(cluster_store):  # noqa: F811 (a fixture)
    """Each tenant batch is one script on one slot: no CROSSSLOT on a real cluster."""
    records = workload() + workload("bravo")
    assert await cluster_store.ledger.append_usage(records) == 20
    assert await cluster_store.ledger.append_usage(records) == 0
    for tenant in ("acme", "bravo"):
        mine = [r for r in records if r.tenant_id == tenant]
        assert await cluster_store.ledger.usage_totals(
            tenant, YESTERDAY, TODAY, "user"
        ) == expected(mine, "user")
        assert await cluster_store.ledger.usage_records(tenant, NOW - 2 * DAY, NOW + 1) == mine


async def test_erasure_works_on_redis_cluster(cluster_store):  # noqa: F811 (a fixture)
    records = dsar_workload()
    await cluster_store.ledger.append_usage(records)
    before = await cluster_store.ledger.usage_totals("acme", YESTERDAY, TODAY, "model")
    assert await cluster_store.ledger.erase_user("acme", "alice") == 4
    assert await cluster_store.ledger.user_records("acme", "alice") == []
    assert await cluster_store.ledger.usage_totals("acme", YESTERDAY, TODAY, "model") == before
    users = await cluster_store.ledger.usage_totals("acme", YESTERDAY, TODAY, "user")
    assert [u.group for u in users] == [None, "bob"]


async def test_the_memory_ledger_keeps_a_bounded_log_and_every_total():
    ledger = MemoryLedger(max_records=3)
    tenants = ["acme", "bravo", "acme", "acme", "bravo"]
    records = [make(tenant, timestamp=NOW + i) for i, tenant in enumerate(tenants)]
    for record in records:  # one by one: the log is trimmed as it grows
        assert await ledger.append_usage([record]) == 1
    kept = [
        *await ledger.usage_records("acme", NOW - 1, NOW + 10),
        *await ledger.usage_records("bravo", NOW - 1, NOW + 10),
    ]
    assert sorted(r.request_id for r in kept) == sorted(r.request_id for r in records[2:])
    for tenant in ("acme", "bravo"):
        mine = [r for r in records if r.tenant_id == tenant]
        assert await ledger.usage_totals(tenant, YESTERDAY, TODAY, "model") == expected(
            mine, "model"
        )
