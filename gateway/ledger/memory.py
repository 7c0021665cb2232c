"""The ledger of `memory://`: the same semantics as Redis, in one process's dictionaries.

Per tenant: the log (records in write order, dropped after `Retention.records_s`), the
ids already written per day (dropped with the day's records) and the day counters
(`<metric>:<group field>` → value, dropped `Retention.totals_s` after the day ends).

One process's memory is not a month of raw records: beyond `max_records` (default
`MAX_RECORDS`) the oldest records leave the log, and their ids the dedupe sets; the day
totals keep everything. A write retried after its records left (never, in one process:
memory writes do not fail) would count twice.

Erasing an end user drops their records from the log and moves their day counters onto
the same model and key without a user (`records.anonymous_field`).
"""

from __future__ import annotations

import datetime as dt
import time
from collections import deque
from collections.abc import Sequence

from gateway.ledger.records import (
    DEFAULT_RETENTION,
    METRICS,
    GroupBy,
    Retention,
    UsageRecord,
    UsageTotals,
    anonymous_field,
    day_end,
    day_of,
    days_between,
    entry_id,
    group_field,
    metric_values,
    sum_fields,
)

__all__ = ["MAX_RECORDS", "MemoryLedger"]

MAX_RECORDS = 100_000
"""Raw records a `memory://` ledger keeps (all tenants); about 100 MB at most."""


class MemoryLedger:
    def __init__(self, max_records: int = MAX_RECORDS) -> None:
        self._max_records = max_records
        self._log: dict[str, deque[tuple[float, UsageRecord]]] = {}
        self._order: deque[tuple[float, str, dt.date, str]] = deque()
        """(written at, tenant, day, entry id) of every logged record, oldest first."""
        self._seen: dict[tuple[str, dt.date], tuple[float, set[str]]] = {}
        self._days: dict[tuple[str, dt.date], tuple[float, dict[str, int]]] = {}

    async def append_usage(
        self, records: Sequence[UsageRecord], retention: Retention = DEFAULT_RETENTION
    ) -> int:
        now = time.time()
        self._expire(now, retention)
        added = 0
        for record in records:
            day = day_of(record.timestamp)
            key = (record.tenant_id, day)
            _, seen = self._seen.setdefault(key, (day_end(day) + retention.records_s, set()))
            rid = entry_id(record)
            if rid in seen:
                continue
            seen.add(rid)
            self._log.setdefault(record.tenant_id, deque()).append((now, record))
            self._order.append((now, record.tenant_id, day, rid))
            _, counters = self._days.setdefault(key, (day_end(day) + retention.totals_s, {}))
            group = group_field(record)
            for metric, value in zip(METRICS, metric_values(record), strict=True):
                if value:
                    name = f"{metric}:{group}"
                    counters[name] = counters.get(name, 0) + value
            added += 1
        while len(self._order) > self._max_records:
            self._drop_oldest()
        return added

    def _drop_oldest(self) -> None:
        _, tenant, day, rid = self._order.popleft()
        log = self._log[tenant]
        log.popleft()  # a tenant's log is in write order too: its oldest is this one
        if not log:
            del self._log[tenant]
        seen = self._seen.get((tenant, day))
        if seen is not None:
            seen[1].discard(rid)

    def _expire(self, now: float, retention: Retention) -> None:
        oldest = now - retention.records_s
        while self._order and self._order[0][0] < oldest:
            self._drop_oldest()
        for table in (self._seen, self._days):
            for key in [k for k, (expires, _) in table.items() if expires <= now]:
                del table[key]

    async def usage_records(
        self, tenant_id: str, from_ts: float, to_ts: float, limit: int = 1000
    ) -> list[UsageRecord]:
        found: list[UsageRecord] = []
        for _, record in self._log.get(tenant_id, ()):
            if from_ts <= record.timestamp < to_ts:
                found.append(record)
                if len(found) >= limit:
                    break
        return found

    async def usage_totals(
        self, tenant_id: str, from_day: dt.date, to_day: dt.date, group_by: GroupBy
    ) -> list[UsageTotals]:
        now = time.time()
        days = []
        for day in days_between(from_day, to_day):
            entry = self._days.get((tenant_id, day))
            if entry is not None and entry[0] > now:
                days.append((day, entry[1]))
        return sum_fields(days, group_by)

    async def user_records(self, tenant_id: str, user: str) -> list[UsageRecord]:
        return [record for _, record in self._log.get(tenant_id, ()) if record.user == user]

    async def erase_user(self, tenant_id: str, user: str) -> int:
        # The dedupe sets stay: they hold entry ids (request id @ time), never the user,
        # and keep a retried write from bringing erased records back.
        log = self._log.pop(tenant_id, deque())
        kept = deque(e for e in log if e[1].user != user)
        if kept:
            self._log[tenant_id] = kept
        erased = {entry_id(r) for _, r in log if r.user == user}
        self._order = deque(o for o in self._order if o[1] != tenant_id or o[3] not in erased)
        for (tenant, _), (_, counters) in self._days.items():
            if tenant == tenant_id:
                for name in list(counters):
                    target = anonymous_field(name, user)
                    if target is not None:
                        counters[target] = counters.get(target, 0) + counters.pop(name)
        return len(log) - len(kept)
