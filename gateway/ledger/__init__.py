"""The usage ledger: every call's `UsageRecord`, kept once, summed as it is written.

    records.py   UsageRecord, the aggregate row `UsageTotals`, what a record adds to it
    memory.py    the ledger of `memory://` (one process)
    redis.py     the ledger of `redis://`: a Stream per tenant + day hashes, one Lua script
    sink.py      LedgerSink: the default usage sink; buffers and writes off the hot path

Nothing is imported here, so `gateway.store` can use `records` without import cycles.
"""
