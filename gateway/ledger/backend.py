"""The usage ledger's storage interface, implemented by `memory.py` and `redis.py`.

Each store exposes one as `store.ledger` (as it exposes `store.limits`); both pass
`tests/integration/test_ledger_contract.py`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Protocol

from gateway.ledger.records import (
    DEFAULT_RETENTION,
    GroupBy,
    Retention,
    UsageRecord,
    UsageTotals,
)

__all__ = ["Ledger"]


class Ledger(Protocol):
    async def append_usage(
        self, records: Sequence[UsageRecord], retention: Retention = DEFAULT_RETENTION
    ) -> int:
        """Write finished calls to the ledger, each once (a record already written is
        skipped, see `ledger.records.entry_id`), and in the same atomic step add them to
        their tenant's day totals. Returns how many were new. Called by `LedgerSink`'s
        writer, never on the request path; raises when the store is unreachable."""

    async def usage_records(
        self, tenant_id: str, from_ts: float, to_ts: float, limit: int = 1000
    ) -> list[UsageRecord]:
        """A tenant's retained records with `from_ts <= timestamp < to_ts`, in write
        order, at most `limit`."""

    async def usage_totals(
        self, tenant_id: str, from_day: dt.date, to_day: dt.date, group_by: GroupBy
    ) -> list[UsageTotals]:
        """A tenant's totals over the UTC days `from_day`..`to_day` (both included), one
        row per `group_by` value (calls without an end user group as None, first), read
        from the day aggregates, never from raw records."""

    async def user_records(self, tenant_id: str, user: str) -> list[UsageRecord]:
        """Every retained record of a tenant that names end user `user` (data-subject
        export), in write order. Scans the tenant's retained log."""

    async def erase_user(self, tenant_id: str, user: str) -> int:
        """Remove every retained record of a tenant that names `user`, and move the
        user's share of the day totals to the no-user group (tenant, model and key totals
        stay right; the user id disappears). Returns how many records were removed."""
