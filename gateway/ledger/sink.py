"""`LedgerSink`: the default usage sink. Records go to a buffer; a writer stores them.

    record()  (per call, off the response path)  → append to a bounded deque, O(1)
    writer    (one task per process)             → every `flush_interval_ms`, or at once
              when a batch is full: `ledger.append_usage(batch)`, then drop the batch

A failed or timed-out write keeps its records at the head of the buffer and is retried
after a backoff (50 ms doubling to `retry_max_ms`): nothing is lost while the store is
unreachable, and a write that did land before its answer was lost is not counted twice
(`append_usage` skips records already written). Only these records are lost, each one
counted in `railgate_usage_dropped_total`: new records while the buffer holds
`buffer_records`; what is still buffered when `shutdown_timeout_s` runs out at shutdown;
a batch the store raised an unexpected (non-Redis) error for, which would otherwise
block every later record. Every failed write counts in `railgate_usage_write_errors_total`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from itertools import islice

from redis.exceptions import RedisClusterException, RedisError

from gateway.config import LedgerSettings
from gateway.ledger.backend import Ledger
from gateway.ledger.records import Retention, UsageRecord
from gateway.metrics import Counters
from gateway.tasks import stop
from gateway.usage import log_record

__all__ = ["LedgerSink"]

log = logging.getLogger("railgate.usage")

FIRST_RETRY_S = 0.05
_DAY = 86400
_UNREACHABLE = (RedisError, RedisClusterException, OSError, TimeoutError)


class LedgerSink:
    def __init__(self, ledger: Ledger, settings: LedgerSettings, counters: Counters) -> None:
        self._ledger = ledger
        self._settings = settings
        self._counters = counters
        self._retention = Retention(
            records_s=settings.retention_days * _DAY, totals_s=settings.totals_retention_days * _DAY
        )
        self._buffer: deque[UsageRecord] = deque()
        self._full = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._down = False
        self._overflowing = False

    @property
    def pending(self) -> int:
        """Records buffered, not yet written."""
        return len(self._buffer)

    async def record(self, record: UsageRecord) -> None:
        """Buffer the record for the writer; never waits for the store."""
        log_record(record)
        if len(self._buffer) >= self._settings.buffer_records:
            self._counters.inc("railgate_usage_dropped_total")
            if not self._overflowing:
                self._overflowing = True
                log.error(
                    "usage buffer full (%d records): new records are dropped", len(self._buffer)
                )
            return
        self._buffer.append(record)
        if len(self._buffer) >= self._settings.batch_records:
            self._full.set()

    def start(self) -> None:
        """Start the writer; called once by the app's lifespan, inside the event loop."""
        self._task = asyncio.get_running_loop().create_task(self._run(), name="usage-ledger")

    async def close(self) -> None:
        """Stop the writer and write what is buffered, for at most `shutdown_timeout_s`;
        whatever is left then is dropped and counted."""
        await stop(self._task)
        self._task = None
        backoff = FIRST_RETRY_S
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._settings.shutdown_timeout_s):
                while not await self._write_all():
                    await asyncio.sleep(backoff)
                    backoff = min(2 * backoff, self._settings.retry_max_ms / 1000)
        if self._buffer:
            self._counters.inc("railgate_usage_dropped_total", by=len(self._buffer))
            log.error("shutdown: %d usage records could not be written", len(self._buffer))
            self._buffer.clear()

    async def _run(self) -> None:
        interval = self._settings.flush_interval_ms / 1000
        backoff = 0.0
        while True:
            if backoff:  # the store failed: wait it out, however full the buffer is
                await asyncio.sleep(backoff)
            else:
                await self._pause(interval)
            if await self._write_all():
                backoff = 0.0
            else:
                backoff = min(max(2 * backoff, FIRST_RETRY_S), self._settings.retry_max_ms / 1000)

    async def _pause(self, seconds: float) -> None:
        """Sleep `seconds`, or less once a whole batch is waiting."""
        self._full.clear()
        if len(self._buffer) >= self._settings.batch_records:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._full.wait()

    async def _write_all(self) -> bool:
        """Write batches until the buffer is empty (True) or a write failed (False)."""
        size = self._settings.batch_records
        while self._buffer:
            batch = list(islice(self._buffer, size))
            try:
                async with asyncio.timeout(self._settings.write_timeout_ms / 1000):
                    await self._ledger.append_usage(batch, self._retention)
            except _UNREACHABLE as exc:
                self._counters.inc("railgate_usage_write_errors_total")
                if not self._down:
                    self._down = True
                    log.warning(
                        "usage ledger write failed (%s); %d records buffered, retrying",
                        type(exc).__name__,
                        len(self._buffer),
                    )
                return False
            except (ValueError, TypeError) as exc:  # not the store being away: a bad batch
                self._counters.inc("railgate_usage_write_errors_total")
                self._counters.inc("railgate_usage_dropped_total", by=len(batch))
                log.error("usage ledger refused %d records (%s)", len(batch), type(exc).__name__)
            else:  # in the ledger now, whether new or written by an earlier attempt
                self._counters.inc("railgate_usage_written_total", by=len(batch))
            for _ in batch:
                self._buffer.popleft()
            if self._down:
                self._down = False
                log.warning("usage ledger writes resumed")
            if self._overflowing and len(self._buffer) < self._settings.buffer_records:
                self._overflowing = False
        return True
