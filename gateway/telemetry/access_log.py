"""One JSON access-log line per request (stub: filled in by the logs work)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway.telemetry.observer import Exchange

if TYPE_CHECKING:
    from gateway.call import Call
    from gateway.ledger.records import UsageRecord

__all__ = ["AccessLog"]


class AccessLog:
    def finished(self, call: Call, record: UsageRecord) -> None:
        pass

    def exchanged(self, exchange: Exchange) -> None:
        pass
