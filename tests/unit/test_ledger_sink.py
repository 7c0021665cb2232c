"""`LedgerSink`: buffering, batching, retries, overflow and shutdown, against a ledger
that can be made unreachable (a `MemoryLedger` behind a switch)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from gateway.config import LedgerSettings
from gateway.ledger.memory import MemoryLedger
from gateway.ledger.records import Retention, UsageRecord, day_of
from gateway.ledger.sink import LedgerSink
from gateway.metrics import Counters
from tests.integration.test_ledger_contract import make as make_at


def make() -> UsageRecord:
    """A record of a call that ended just now."""
    return make_at(timestamp=time.time())


class SwitchedStore(MemoryLedger):
    """A memory ledger whose writes can fail: `down` refuses them before writing,
    `lose_answers` writes and then fails (the answer was lost on the way back)."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False
        self.lose_answers = False
        self.calls: list[int] = []

    async def append_usage(self, records: Sequence[UsageRecord], retention: Retention) -> int:
        self.calls.append(len(records))
        if self.down:
            raise RedisConnectionError("connection refused")
        added = await super().append_usage(records, retention)
        if self.lose_answers:
            raise RedisConnectionError("connection reset")
        return added


def sink_for(store: SwitchedStore, **settings) -> tuple[LedgerSink, Counters]:
    counters = Counters()
    fast = {"flush_interval_ms": 10, "retry_max_ms": 40, "shutdown_timeout_s": 1.0}
    return LedgerSink(store, LedgerSettings(**{**fast, **settings}), counters), counters


async def written(store: MemoryLedger, tenant: str = "acme") -> int:
    now = time.time()
    totals = await store.usage_totals(tenant, day_of(now - 86400), day_of(now), "model")
    return sum(t.requests for t in totals)


async def until(check, within: float = 2.0) -> None:
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


async def test_record_only_buffers():
    store = SwitchedStore()
    sink, _ = sink_for(store)  # not started: nothing may reach the store
    for _ in range(3):
        await sink.record(make())
    assert sink.pending == 3 and store.calls == []


async def test_the_writer_flushes_in_batches():
    store = SwitchedStore()
    sink, counters = sink_for(store, batch_records=2, flush_interval_ms=60_000)
    sink.start()
    try:
        await sink.record(make())
        await asyncio.sleep(0.2)
        assert store.calls == []  # less than a batch waits for the interval
        for _ in range(4):
            await sink.record(make())  # a full batch wakes the writer: all is written
        await until(lambda: _eq(written(store), 5))
        assert store.calls == [2, 2, 1] and sink.pending == 0
        await sink.record(make())
    finally:
        await sink.close()  # the last record is written on shutdown
    assert store.calls == [2, 2, 1, 1]
    assert await written(store) == 6
    assert counters.get("railgate_usage_written_total") == 6
    assert counters.get("railgate_usage_dropped_total") == 0


async def _eq(value, expected) -> bool:
    return await value == expected


async def test_records_wait_while_the_store_is_down_and_are_written_once():
    store = SwitchedStore()
    sink, counters = sink_for(store)
    store.down = True
    sink.start()
    try:
        records = [make() for _ in range(20)]
        for record in records[:10]:
            await sink.record(record)
        await until(lambda: _true(counters.get("railgate_usage_write_errors_total") >= 2))
        store.down, store.lose_answers = False, True  # writes land, answers are lost
        for record in records[10:]:
            await sink.record(record)
        await until(lambda: _true(len(store.calls) >= 8))
        store.lose_answers = False
        await until(lambda: _true(sink.pending == 0))
    finally:
        await sink.close()
    assert await written(store) == 20
    now = time.time()
    assert await store.usage_records("acme", now - 60, now + 1, limit=100) == records
    assert counters.get("railgate_usage_dropped_total") == 0
    assert counters.get("railgate_usage_written_total") == 20


async def _true(value: bool) -> bool:
    return value


async def test_retries_back_off_while_the_store_is_down():
    store = SwitchedStore()
    sink, counters = sink_for(store, retry_max_ms=200)
    store.down = True
    sink.start()
    try:
        await sink.record(make())
        await asyncio.sleep(1.0)
    finally:
        store.down = False
        await sink.close()
    # 50, 100, 200, 200, 200 … ms apart: about 7 attempts in a second, not 100
    assert 4 <= counters.get("railgate_usage_write_errors_total") <= 9
    assert await written(store) == 1


async def test_overflow_drops_new_records_and_counts_them():
    store = SwitchedStore()
    sink, counters = sink_for(store, buffer_records=5)
    store.down = True
    sink.start()
    try:
        kept = [make() for _ in range(5)]
        for record in [*kept, make(), make(), make()]:
            await sink.record(record)
        assert sink.pending == 5
        assert counters.get("railgate_usage_dropped_total") == 3
        store.down = False
        await until(lambda: _true(sink.pending == 0))
    finally:
        await sink.close()
    now = time.time()
    assert await store.usage_records("acme", now - 60, now + 1) == kept
    assert counters.get("railgate_usage_dropped_total") == 3


async def test_shutdown_gives_up_after_its_timeout_and_counts_the_rest():
    store = SwitchedStore()
    sink, counters = sink_for(store, shutdown_timeout_s=0.3)
    store.down = True
    sink.start()
    for _ in range(4):
        await sink.record(make())
    started = time.monotonic()
    await sink.close()
    assert time.monotonic() - started < 0.6
    assert sink.pending == 0
    assert counters.get("railgate_usage_dropped_total") == 4
    assert await written(store) == 0


async def test_a_store_stalling_past_the_write_timeout_is_retried():
    class Stalling(SwitchedStore):
        stall = True

        async def append_usage(self, records, retention):
            if self.stall:
                self.calls.append(len(records))
                await asyncio.sleep(10)
            return await super().append_usage(records, retention)

    store = Stalling()
    sink, counters = sink_for(store, write_timeout_ms=50)
    sink.start()
    try:
        await sink.record(make())
        await until(lambda: _true(counters.get("railgate_usage_write_errors_total") >= 1))
        store.stall = False
        await until(lambda: _true(sink.pending == 0))
    finally:
        await sink.close()
    assert await written(store) == 1


@pytest.mark.parametrize("bad", [ValueError, TypeError])
async def test_a_batch_the_store_rejects_is_dropped_not_retried_forever(bad):
    class Rejecting(SwitchedStore):
        async def append_usage(self, records, retention):
            self.calls.append(len(records))
            raise bad("cannot encode")

    store = Rejecting()
    sink, counters = sink_for(store)
    sink.start()
    try:
        await sink.record(make())
        await until(lambda: _true(sink.pending == 0))
    finally:
        await sink.close()
    assert store.calls == [1]
    assert counters.get("railgate_usage_dropped_total") == 1
    assert counters.get("railgate_usage_write_errors_total") == 1
