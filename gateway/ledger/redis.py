"""The ledger of `redis://`: one Lua script per tenant batch, one cluster slot per tenant.

Keys (`P` is the store prefix; `<day>` is the UTC day, `YYYY-MM-DD`):

    P:{<tenant>}:usage:log          Stream: one entry per record (field `r`, JSON),
                                    trimmed with `MINID` to `Retention.records_s`
    P:{<tenant>}:usage:ids:<day>    set of the entry ids written for that day (dedupe);
                                    expires `records_s` after the day ends
    P:{<tenant>}:usage:day:<day>    hash `<metric>:<group>` → integer; `<group>` is
                                    `["model","key id","user"|null]`; expires `totals_s`
                                    after the day ends

`append_usage` runs `APPEND` once per tenant in the batch: for each record not yet in
its day's id set, add it to the set, append it to the log and add it to the day hash,
all in one atomic step on one slot, so a retried batch never counts twice. Stream ids
are the Redis server's time of writing, so the log is in write order; `usage_records`
reads the range from `from_ts` (less `CLOCK_SKEW_MS`) up to `to_ts` plus
`LATE_WRITE_MS` and filters by each record's own timestamp. Records written more than
`LATE_WRITE_MS` after they ended (a longer Redis outage) are in the totals but not in
a time-range listing.

Data-subject requests scan the tenant's whole log (`XRANGE` in pages). `erase_user`
deletes the user's entries (`XDEL`) and, one `ERASE` script per day hash of the tenant
(found with `SCAN`), moves each of the user's counters onto the same model and key
without a user. The id sets stay: they hold entry ids (request id @ time), never the
user, and keep a retried write from bringing erased records back.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import AsyncIterator, Sequence
from typing import Any

import msgspec
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

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
from gateway.limits.batch import AutoPipeline

__all__ = ["RedisLedger"]

SCRIPT_RECORDS = 32
"""Records per script call: ~1 ms of Redis time at most (measured ~20-30 us a record)."""
CLOCK_SKEW_MS = 60_000
LATE_WRITE_MS = 3_600_000
_PAGE = 500

APPEND = f"""
local now = redis.call('TIME')
local minid = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) - tonumber(ARGV[1])
local ndays = tonumber(ARGV[2])
local metrics = {{{", ".join(f"'{m}'" for m in METRICS)}}}
local pos = 3 + 2 * ndays
local added = 0
while pos <= #ARGV do
  local day = tonumber(ARGV[pos])
  if redis.call('SADD', KEYS[2 * day], ARGV[pos + 1]) == 1 then
    redis.call('XADD', KEYS[1], '*', 'r', ARGV[pos + 2])
    local hash = KEYS[2 * day + 1]
    for m = 1, #metrics do
      local value = tonumber(ARGV[pos + 3 + m])
      if value ~= 0 then
        redis.call('HINCRBY', hash, metrics[m] .. ':' .. ARGV[pos + 3], value)
      end
    end
    added = added + 1
  end
  pos = pos + 4 + #metrics
end
if added > 0 then
  redis.call('XTRIM', KEYS[1], 'MINID', minid)
end
for d = 1, ndays do
  redis.call('EXPIREAT', KEYS[2 * d], ARGV[1 + 2 * d])
  redis.call('EXPIREAT', KEYS[2 * d + 1], ARGV[2 + 2 * d])
end
return added
"""
"""KEYS: log, then (ids, day) per day. ARGV: records retention ms, the number of days,
(ids expire-at, day expire-at) per day, then per record: day number (1-based), entry id,
JSON, group, and one value per metric."""

ERASE = """
for i = 1, #ARGV, 2 do
  local value = redis.call('HGET', KEYS[1], ARGV[i])
  if value then
    redis.call('HINCRBY', KEYS[1], ARGV[i + 1], value)
    redis.call('HDEL', KEYS[1], ARGV[i])
  end
end
"""
"""KEYS: a day hash. ARGV: pairs of (a user's counter, the same counter without the user)."""

SWAP = """
local start = ARGV[1] == '-' and '-' or '(' .. ARGV[1]
local rest = redis.call('XRANGE', KEYS[1], start, '+')
for _, entry in ipairs(rest) do
  redis.call('XADD', KEYS[2], entry[1], unpack(entry[2]))
end
if redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('RENAME', KEYS[2], KEYS[1])
else
  redis.call('DEL', KEYS[1])
end
return #rest
"""
"""KEYS: the log, its fresh copy. ARGV: the last id already copied (`-`: none). Copies
what came after it, then puts the copy in the log's place."""

_enc = msgspec.json.Encoder()
_dec = msgspec.json.Decoder(UsageRecord)


class RedisLedger:
    """Appends run `SCRIPT_RECORDS` records per script call, one call after the other:
    Redis runs one script at a time, so a long append would hold up every admission;
    the limiter's scripts (on their own connection) slip in between the chunks. `batch`
    (the store's, on a lean connection of the ledger's own) packs them cheaply."""

    def __init__(
        self, client: Redis | RedisCluster, prefix: str, batch: AutoPipeline | None = None
    ) -> None:
        self._r = client
        self._prefix = prefix
        self._append = client.register_script(APPEND)
        self._erase = client.register_script(ERASE)
        self._swap = client.register_script(SWAP)
        self._batch = batch or AutoPipeline(client, deadline_s=2.0)

    def _key(self, tenant_id: str, name: str) -> str:
        return f"{self._prefix}:{{{tenant_id}}}:usage:{name}"

    async def append_usage(
        self, records: Sequence[UsageRecord], retention: Retention = DEFAULT_RETENTION
    ) -> int:
        by_tenant: dict[str, list[UsageRecord]] = {}
        for record in records:
            by_tenant.setdefault(record.tenant_id, []).append(record)
        added = 0
        for tenant_id, batch in by_tenant.items():
            for at in range(0, len(batch), SCRIPT_RECORDS):
                chunk = batch[at : at + SCRIPT_RECORDS]
                keys, args = self._script_args(tenant_id, chunk, retention)
                added += int(await self._batch.call(self._append, keys, args))
        return added

    def _script_args(
        self, tenant_id: str, batch: list[UsageRecord], retention: Retention
    ) -> tuple[list[str], list[Any]]:
        days: dict[dt.date, int] = {}
        rows: list[Any] = []
        for record in batch:
            day = day_of(record.timestamp)
            number = days.setdefault(day, len(days) + 1)
            rows += (number, entry_id(record), _enc.encode(record), group_field(record))
            rows += metric_values(record)
        keys = [self._key(tenant_id, "log")]
        args: list[Any] = [retention.records_s * 1000, len(days)]
        for day in days:
            keys += (self._key(tenant_id, f"ids:{day}"), self._key(tenant_id, f"day:{day}"))
            args += (day_end(day) + retention.records_s, day_end(day) + retention.totals_s)
        return keys, args + rows

    async def usage_records(
        self, tenant_id: str, from_ts: float, to_ts: float, limit: int = 1000
    ) -> list[UsageRecord]:
        log = self._key(tenant_id, "log")
        start = str(max(0, int(from_ts * 1000) - CLOCK_SKEW_MS))
        end = str(int(to_ts * 1000) + LATE_WRITE_MS)
        found: list[UsageRecord] = []
        while len(found) < limit:
            page: list[tuple[bytes, dict[bytes, bytes]]] = await self._r.xrange(  # type: ignore[assignment]
                log, start, end, count=_PAGE
            )
            for _, fields in page:
                record = _dec.decode(fields[b"r"])
                if from_ts <= record.timestamp < to_ts:
                    found.append(record)
                    if len(found) >= limit:
                        break
            if len(page) < _PAGE:
                break
            start = "(" + page[-1][0].decode()
        return found

    async def usage_totals(
        self, tenant_id: str, from_day: dt.date, to_day: dt.date, group_by: GroupBy
    ) -> list[UsageTotals]:
        days = days_between(from_day, to_day)
        pipe = self._r.pipeline(transaction=False)
        for day in days:
            pipe.hgetall(self._key(tenant_id, f"day:{day}"))
        stored: list[dict[bytes, bytes]] = await pipe.execute()
        return sum_fields(
            (
                (day, {k.decode(): int(v) for k, v in fields.items()})
                for day, fields in zip(days, stored, strict=True)
            ),
            group_by,
        )

    async def user_records(self, tenant_id: str, user: str) -> list[UsageRecord]:
        return [record async for _, record in self._user_entries(tenant_id, user)]

    async def erase_user(self, tenant_id: str, user: str) -> int:
        log = self._key(tenant_id, "log")
        ids = [entry async for entry, _ in self._user_entries(tenant_id, user)]
        erased = 0
        for at in range(0, len(ids), _PAGE):
            erased += int(await self._r.xdel(log, *ids[at : at + _PAGE]))
        if erased:
            await self._rewrite(log)
        pattern = _glob_escape(self._key(tenant_id, "day:")) + "*"
        async for day in self._r.scan_iter(match=pattern, count=_PAGE):
            names: list[bytes] = await self._r.hkeys(day)  # type: ignore[assignment]
            args: list[str] = []
            for name in map(bytes.decode, names):
                target = anonymous_field(name, user)
                if target is not None:
                    args += (name, target)
            if args:
                await self._erase([day], args)
        return erased

    async def _rewrite(self, log: str) -> None:
        """Replace the log by a fresh copy of its entries (same ids). `XDEL` only marks
        entries deleted: their bytes stay in the stream's nodes, in memory and in
        snapshots, until trimmed. The copy is made in pages; one script then copies what
        was appended meanwhile and swaps it in (both keys share the tenant's slot)."""
        fresh = log + ":rewrite"
        await self._r.delete(fresh)
        last = "-"
        while True:
            start = last if last == "-" else "(" + last
            page: list[tuple[bytes, dict[bytes, bytes]]] = await self._r.xrange(  # type: ignore[assignment]
                log, start, "+", count=_PAGE
            )
            if not page:
                break
            pipe = self._r.pipeline(transaction=False)
            for entry, fields in page:
                pipe.xadd(fresh, fields, id=entry)  # type: ignore[arg-type]
            await pipe.execute()
            last = page[-1][0].decode()
            if len(page) < _PAGE:
                break
        await self._swap([log, fresh], [last])

    async def _user_entries(
        self, tenant_id: str, user: str
    ) -> AsyncIterator[tuple[bytes, UsageRecord]]:
        """(stream id, record) of each of `user`'s retained records, in write order."""
        log = self._key(tenant_id, "log")
        start = "-"
        while True:
            page: list[tuple[bytes, dict[bytes, bytes]]] = await self._r.xrange(  # type: ignore[assignment]
                log, start, "+", count=_PAGE
            )
            for entry, fields in page:
                record = _dec.decode(fields[b"r"])
                if record.user == user:
                    yield entry, record
            if len(page) < _PAGE:
                return
            start = "(" + page[-1][0].decode()


def _glob_escape(text: str) -> str:
    """`text` matched literally by a `SCAN MATCH` pattern (tenant ids are free text)."""
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)
