"""Per-call Prometheus series (stub: filled in by the metrics work)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway.metrics import Counters
from gateway.telemetry.observer import Exchange

if TYPE_CHECKING:
    from gateway.call import Call
    from gateway.ledger.records import UsageRecord

__all__ = ["CallMetrics"]


class CallMetrics:
    def __init__(self, counters: Counters) -> None:
        self._counters = counters

    def finished(self, call: Call, record: UsageRecord) -> None:
        pass

    def exchanged(self, exchange: Exchange) -> None:
        pass
